"""Which image files a batch scoring run reads: files and folders named on the command line, or a list file.

A folder is walked the way training walks a class folder (data/folders.py): recursively, in sorted order, hidden
files and macOS resource forks left out, only the image extensions training reads, links to folders not followed,
empty and unreadable entries skipped with a reason. A path named explicitly (an argument or a line of the list) that
does not exist is the user's mistake and stops the run before anything is written.
"""

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from trainjob.data.detect import has_image_extension, printable, walk_files
from trainjob.errors import DataError

MAX_LIST_LINE = 4096  # a path longer than any file system allows is a sign of a binary file given as the list


@dataclass
class Inputs:
    """The files to score, in order, and what listing them left out."""

    paths: list[str] = field(default_factory=list)  # to open
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): found but not scorable

    def add_file(self, path: str, size: int) -> None:
        if size == 0:
            self.skipped.append((path, "empty file"))
        else:
            self.paths.append(path)


def row_path(path: str) -> str:
    """The path as an output row holds it: exact, except undecodable bytes (names need not be UTF-8) as \\xNN, so
    every row is valid UTF-8. Resuming compares these, so the same file always gets the same string."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def gather(paths: Iterable[str], from_list: str | None = None) -> Inputs:
    """Every scorable file under paths (files or folders) and in from_list ('-': stdin); DataError when a named
    path is missing or nothing at all is left to score."""
    named = list(paths)
    if from_list is not None:
        named += _read_list(from_list)
    if not named:
        raise DataError("no images given: pass image files or folders, or --from LIST (one path per line)")
    inputs = Inputs()
    for path in named:
        _add(inputs, path)
    if not inputs.paths:
        found = f" ({len(inputs.skipped)} other files, e.g. {printable(inputs.skipped[0][0])}: " \
                f"{inputs.skipped[0][1]})" if inputs.skipped else ""
        raise DataError(f"no image files to score in {', '.join(printable(p) for p in named[:3])}{found}: expected "
                        ".jpg, .png, .bmp, .gif, .webp or .tif files")
    return inputs


def _read_list(from_list: str) -> list[str]:
    where = "stdin" if from_list == "-" else printable(from_list)
    try:
        if from_list == "-":
            text = sys.stdin.buffer.read()
        else:
            with open(from_list, "rb") as f:
                text = f.read()
    except FileNotFoundError:
        raise DataError(f"no list file at {where}: pass --from a text file with one image path per line "
                        "(or - for stdin)") from None
    except OSError as e:
        raise DataError(f"cannot read the list {where} ({e.strerror or e}): check the path and its permissions") \
            from None
    lines = [os.fsdecode(line.rstrip(b"\r")) for line in text.split(b"\n")]
    base = "" if from_list == "-" else os.path.dirname(from_list)
    paths = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        if len(line) > MAX_LIST_LINE or "\0" in line:
            raise DataError(f"line {number} of the list {where} is not a path ({len(line)} characters): expected a "
                            "text file with one image path per line")
        paths.append(line if os.path.isabs(line) or from_list == "-" else os.path.join(base, line))
    return paths


def _add(inputs: Inputs, path: str) -> None:
    try:
        if os.path.isdir(path):
            _walk(inputs, path)
            return
        size = os.stat(path).st_size
    except FileNotFoundError:
        hint = " (a dangling link)" if os.path.islink(path) else ""
        raise DataError(f"no file or folder at {printable(path)}{hint}: check the path (a relative path in a list "
                        "is read from the list's folder)") from None
    except OSError as e:
        raise DataError(f"cannot read {printable(path)} ({e.strerror or e}): check the path and its permissions") \
            from None
    inputs.add_file(path, size)


def _walk(inputs: Inputs, root: str) -> None:
    def unreadable(folder: str, e: OSError) -> None:
        inputs.skipped.append((folder, f"folder unreadable ({e.strerror or e})"))

    for entry in walk_files(root, unreadable):
        if not has_image_extension(entry.name):
            continue  # a folder of photos holds thumbnails' .db files, notes, .json sidecars: not worth a row
        try:
            if entry.is_symlink() and os.path.isdir(entry.path):
                inputs.skipped.append((entry.path, "link to a folder (not followed)"))
                continue
            size = os.stat(entry.path).st_size  # follows file links; raises for loops and dangling links
        except OSError as e:
            inputs.skipped.append((entry.path, f"unreadable ({e.strerror or e})"))
            continue
        inputs.add_file(entry.path, size)
