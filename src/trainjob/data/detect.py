"""Which dataset layout is under --data_path: checked in a fixed order, so a folder holding several is unambiguous."""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from trainjob.errors import DataError
from trainjob.text import printable

BATCHES_DIR = "cifar-10-batches-py"
TAR_NAME = "cifar-10-python.tar.gz"
TEST_DIR_NAMES = ("test", "val")  # first found wins
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})  # compared lowered
EXPECTED_LAYOUTS = (f"{BATCHES_DIR}/ (data_batch_1..5 + test_batch), the batch files themselves, {TAR_NAME}, "
                    "train/<class>/ with test/<class>/ or val/<class>/, one <class>/ folder of images per class, "
                    "or a manifest: a .csv or .jsonl file, or a folder holding an MLTable file")
MLTABLE = "MLTable"  # the file name Azure ML gives an MLTable's definition
MANIFEST_SUFFIXES = {".csv": "manifest-csv", ".tsv": "manifest-csv", ".jsonl": "manifest-jsonl",
                     ".json": "manifest-jsonl"}  # compared lowered
MANIFEST_KINDS = ("manifest-csv", "manifest-jsonl", "mltable")


@dataclass(frozen=True)
class Layout:
    kind: str  # "cifar-batches" | "cifar-tar" | "image-folders" | "image-folder-split", or one of MANIFEST_KINDS
    path: Path  # the batches folder, the archive, the root of the image folders, the manifest, the MLTable's folder
    train_dir: str | None = None  # image layouts: "train", or None when the class folders sit in path itself
    test_dir: str | None = None  # "test" | "val"; None = hold out val_fraction of the training images
    note: str | None = None  # something worth a log line (e.g. "val/ ignored, test/ used")
    columns: str | None = None  # manifests: --columns IMAGE,LABEL
    image_root: str | None = None  # manifests: --image_root, where azureml:// and blob URLs point


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"  # __MACOSX: resource forks left by macOS zip files


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_files(folder: str, unreadable: Callable[[str, OSError], None]) -> Iterator[os.DirEntry]:
    """Every entry under folder that is not a folder, depth first in sorted (byte) order, hidden ones left out: how
    training walks a class folder and batch scoring a folder of images. Links to folders come out as entries, never
    followed, so no loop. unreadable(path, error) hears of each folder that cannot be listed. A stack, not recursion:
    a tree 1,100 folders deep must not hit Python's recursion limit."""
    stack = [_sorted_entries(folder, unreadable)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if is_hidden(entry.name):
            continue
        try:
            is_folder = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_folder = False  # the caller's stat of it says why
        if is_folder:
            stack.append(_sorted_entries(entry.path, unreadable))
        else:
            yield entry


def _sorted_entries(folder: str, unreadable: Callable[[str, OSError], None]) -> Iterator[os.DirEntry]:
    try:
        return iter(sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name)))
    except OSError as e:
        unreadable(folder, e)
        return iter(())


def manifest_kind(path: Path) -> str | None:
    """The manifest kind a file's name says it is (a .csv, a .jsonl, an MLTable file), or None."""
    if path.name == MLTABLE:
        return "mltable"
    return MANIFEST_SUFFIXES.get(path.suffix.lower())


def check_folder(path: Path) -> None:
    """Fail with the fix when --data_path is missing, a file other than a manifest, unreadable or empty."""
    shown = printable(str(path))
    if path.is_file() and manifest_kind(path):
        return
    if not path.exists():
        hint = " (a dangling link)" if path.is_symlink() else ""
        raise DataError(f"data path {shown} does not exist{hint}: expected a folder holding {EXPECTED_LAYOUTS}; "
                        "check --data_path (or DATA_PATH) and that the dataset is mounted")
    if not path.is_dir():
        raise DataError(f"data path {shown} is a file, expected a folder: pass the folder that contains it, "
                        f"--data_path {printable(str(path.parent))}")
    try:
        entries = os.listdir(path)
    except PermissionError as e:
        raise DataError(f"data path {shown} cannot be listed ({e.strerror}): expected a readable folder; "
                        "fix its permissions or the mount") from e
    if not [name for name in entries if not is_hidden(name)]:
        raise DataError(f"data path {shown} is empty{' (only hidden files)' if entries else ''}: expected "
                        f"{EXPECTED_LAYOUTS}; upload the dataset there or point --data_path at it")


def _visible(path: Path) -> list[str]:
    return sorted(name for name in os.listdir(path) if not is_hidden(name))


def _looks_like_batches(folder: Path) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return "test_batch" in names or any(name.startswith("data_batch_") for name in names)


def _find_image(folder: Path, depth: int = 3) -> bool:
    """True if folder holds an image file within a few levels (stops at the first one)."""
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not is_hidden(e.name)]
    except OSError:
        return False
    if any(e.is_file() and has_image_extension(e.name) for e in entries):
        return True
    return depth > 0 and any(e.is_dir(follow_symlinks=False) and _find_image(Path(e.path), depth - 1) for e in entries)


def _has_class_folders(root: Path) -> bool:
    return any((root / name).is_dir() and _find_image(root / name) for name in _visible(root))


def _match(path: Path) -> Layout | None:
    batches = path / BATCHES_DIR
    if batches.is_dir() and (_looks_like_batches(batches) or not (path / TAR_NAME).is_file()):
        return Layout("cifar-batches", batches)
    if _looks_like_batches(path):
        return Layout("cifar-batches", path)
    if (path / TAR_NAME).is_file():
        return Layout("cifar-tar", path / TAR_NAME)
    if (path / MLTABLE).is_file():  # an MLTable folder says what to read: it wins over any images beside it
        return Layout("mltable", path)
    train = path / "train"
    if train.is_dir() and _has_class_folders(train):
        found = [name for name in TEST_DIR_NAMES if (path / name).is_dir()]
        if found:
            note = f"{found[1]}/ ignored: {found[0]}/ is the test set" if len(found) > 1 else None
            return Layout("image-folders", path, train_dir="train", test_dir=found[0], note=note)
        return Layout("image-folder-split", path, train_dir="train",
                      note="train/ has no test/ or val/ beside it: holding out part of train/ as the test set")
    if _has_class_folders(path):
        return Layout("image-folder-split", path)
    return None


def detect_layout(path: Path, columns: str | None = None, image_root: str | None = None) -> Layout:
    """The layout of a manifest file or under an existing, non-empty folder (call check_folder first); DataError
    listing what was found. columns, image_root: --columns and --image_root, which only manifests take."""
    kind = manifest_kind(path) if path.is_file() else None
    layout = Layout(kind, path.parent if kind == "mltable" else path) if kind else _folder_layout(path)
    if layout.kind in MANIFEST_KINDS:
        return replace(layout, columns=columns, image_root=image_root)
    if columns or image_root:
        flag = "--columns" if columns else "--image_root"
        raise DataError(f"{flag} applies to a manifest (a .csv or .jsonl file, or an MLTable folder), but "
                        f"{printable(str(path))} is {layout.kind}: leave {flag} out")
    return layout


def _folder_layout(path: Path) -> Layout:
    layout = _match(path)
    found = _visible(path)
    subfolders = [n for n in found if (path / n).is_dir()]
    # One sub-folder holding a whole dataset is a data path one level too high, not a single-class image tree.
    nested = len(subfolders) == 1 and (layout is None or layout.kind == "image-folder-split" and not layout.train_dir)
    manifests = [n for n in found if (path / n).is_file() and manifest_kind(path / n)]
    if manifests and (layout is None or nested):  # a Kaggle-style images/ + labels.csv: the folder is not the data
        hint = (f"; a manifest is read when --data_path names it: --data_path "
                f"{printable(str(path / manifests[0]))}")
    elif nested and _match(path / subfolders[0]) is not None:
        hint = f"; the dataset looks to be one level down: --data_path {printable(str(path / subfolders[0]))}"
    elif layout is not None:
        return layout
    elif any(has_image_extension(n) for n in found):
        hint = "; images sit directly in the folder: put each class's images in its own sub-folder"
    else:
        hint = ""
    shown = ", ".join(printable(n) + ("/" if (path / n).is_dir() else "") for n in found[:12])
    more = f" and {len(found) - 12} more" if len(found) > 12 else ""
    raise DataError(f"no known dataset layout in {printable(str(path))}: found {shown}{more}; "
                    f"expected {EXPECTED_LAYOUTS}{hint}")
