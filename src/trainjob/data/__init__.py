"""Find, validate and load the dataset under --data_path (or generate one for --demo)."""

import os
from collections.abc import Callable
from pathlib import Path

import torch

from trainjob.data import cifar, folders, synthetic
from trainjob.data.dataset import Dataset, Split
from trainjob.data.detect import check_folder, detect_layout, printable
from trainjob.errors import DataError

__all__ = ["Dataset", "Split", "load_dataset"]

LISTING_MAX_ENTRIES = 50  # the tutorial prints os.listdir(data_path); a folder of 50,000 images would flood the log
SKIPPED_EXAMPLES = 5


def load_dataset(data_path: str | None, *, image_size: int, val_fraction: float, seed: int,
                 cache_dir: str | None, demo: bool, log: Callable[[str], None] = print, features=None,
                 progress: str = "auto", columns: str | None = None, image_root: str | None = None) -> Dataset:
    """Detect the layout under data_path and load it into uint8 tensors; raise DataError with a one-line fix.

    progress: the --progress mode of the decoding display ("off" on the ranks that are not the main one).
    columns, image_root: --columns and --image_root, for a manifest (data/manifest.py).

    features: a features.FeatureExtractor: the splits then hold its feature rows per image instead of pixels
    (image files are streamed through it; CIFAR and --demo pixels are loaded at their own size first)."""
    in_memory_size = image_size if features is None else None
    log("===== DATA =====")
    if demo:
        log(f"DATA PATH: none (--demo: {synthetic.DEMO_TRAIN_IMAGES} train + {synthetic.DEMO_TEST_IMAGES} test "
            f"generated images, seed {seed})")
        log("================")
        dataset = synthetic.make_demo_dataset(image_size=in_memory_size or synthetic.DEMO_IMAGE_SIZE, seed=seed)
    else:
        if not data_path:
            raise DataError("no dataset given: pass --data_path FOLDER (or set DATA_PATH), or --demo")
        path = Path(data_path)
        log(f"DATA PATH: {printable(data_path)}")
        check_folder(path)
        log("LIST FILES IN DATA PATH...")
        log(listing_line(path))
        log("================")
        layout = detect_layout(path, columns, image_root)
        log(f"layout: {layout.kind} at {printable(str(layout.path))}" + (f" ({layout.note})" if layout.note else ""))
        if layout.kind in ("cifar-batches", "cifar-tar"):
            dataset = _load_cifar(layout, in_memory_size or cifar.CIFAR_SIDE, log)
        else:
            dataset = folders.load_image_folders(layout, image_size=image_size, val_fraction=val_fraction, seed=seed,
                                                 cache_dir=cache_dir, log=log, features=features,
                                                 progress=progress)
    if features is not None and dataset.input_size is None:
        dataset = features.for_dataset(dataset)
    log(summary_line(dataset))
    if dataset.skipped:
        examples = "; ".join(f"{s['path']} ({s['reason']})" for s in dataset.skipped[:SKIPPED_EXAMPLES])
        hidden = len(dataset.skipped) - SKIPPED_EXAMPLES
        more = f"; and {hidden} more" if hidden > 0 else ""
        log(f"skipped {len(dataset.skipped)} unreadable files: {examples}{more}")
    return dataset


def listing_line(path: Path) -> str:
    """The tutorial's `print(os.listdir(data_path))`, sorted and cut short for huge folders (a manifest: its name)."""
    names = [path.name] if path.is_file() else sorted(os.listdir(path))
    if len(names) <= LISTING_MAX_ENTRIES:
        return str(names)
    return f"{names[:LISTING_MAX_ENTRIES]} ... and {len(names) - LISTING_MAX_ENTRIES} more"


def summary_line(dataset: Dataset) -> str:
    height, width = dataset.image_size
    return (f"dataset: {dataset.format}, {len(dataset.classes)} classes, {len(dataset.train)} train / "
            f"{len(dataset.test)} test images (test: {dataset.test_split}), {height}x{width} RGB, "
            f"{len(dataset.skipped)} skipped files")


def _load_cifar(layout, image_size: int, log: Callable[[str], None]) -> Dataset:
    if layout.kind == "cifar-tar":
        arrays = cifar.read_tar(layout.path)
    else:
        arrays = cifar.read_batches_folder(layout.path)
    log(f"read {', '.join(arrays.train_batches)} and {cifar.TEST_BATCH}")
    train_x = torch.from_numpy(arrays.train_x)  # (N, 3, 32, 32) uint8
    test_x = torch.from_numpy(arrays.test_x)
    if image_size != cifar.CIFAR_SIDE:
        log(f"resizing CIFAR images from 32x32 to {image_size}x{image_size} (antialiased bilinear)")
        train_x, test_x = cifar.resize_images(train_x, image_size), cifar.resize_images(test_x, image_size)
    return Dataset(train=Split(train_x.contiguous(), torch.from_numpy(arrays.train_y)),
                   test=Split(test_x.contiguous(), torch.from_numpy(arrays.test_y)),
                   classes=arrays.classes, format=layout.kind, source=str(layout.path.resolve()),
                   test_split=cifar.TEST_BATCH)
