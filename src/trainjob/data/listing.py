"""What every image-file layout lists before decoding (class folders and manifests alike): the files, their labels
and splits, and what was left out. Its own module so that folders.py and manifest.py share it without importing
each other."""

import errno
from dataclasses import dataclass, field

from trainjob.data.detect import printable

TRAIN, TEST = 0, 1  # split codes stored per image


@dataclass
class Listing:
    """Every listed image file, in a fixed order, before decoding."""

    classes: list[str]
    paths: list[str] = field(default_factory=list)  # absolute, to open
    rels: list[str] = field(default_factory=list)  # relative to the data root, printable
    labels: list[int] = field(default_factory=list)
    splits: list[int] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # found while listing: wrong extension, empty, broken link
    # (rel path, size, mtime_ns, ctime_ns, inode) for the cache key. ctime: a rewrite that keeps the size and resets
    # the mtime (touch -d, rsync -t, cp -p) still moves it, and no user call can set it back.
    identity: list[tuple[bytes, int, int, int, int]] = field(default_factory=list)
    test_split: str | None = None  # where the fixed test set comes from ("test", "val", "test rows of x.csv"); None:
    # hold out --val_fraction per class
    source: str | None = None  # a manifest's name, for messages about its rows; None for class folders


def skip(listing: Listing, rel: str, reason: str) -> None:
    listing.skipped.append({"path": printable(rel), "reason": reason})


def stat_reason(error: OSError, missing: str = "broken link") -> str:
    """Why a file could not be listed. missing: what ENOENT means here (in a folder: a dangling link; in a
    manifest: a row naming a file that is not there)."""
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno == errno.ENOENT:
        return missing
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"unreadable ({error.strerror or error})"
