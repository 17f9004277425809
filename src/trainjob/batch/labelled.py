"""A labelled dataset for `train evaluate`, in any layout training reads, as files to stream or pixels in memory.

The split rules are training's own (data/detect.py, data/folders.py), so an evaluation can score exactly the images
a training run tested on: a test/ (or val/) folder, CIFAR's test_batch, or the seeded held-out share of class
folders, drawn from the readable images after decoding as training draws it.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainjob.data import cifar, folders
from trainjob.data.detect import check_folder, detect_layout, printable
from trainjob.errors import DataError

SPLITS = ("auto", "test", "all")


@dataclass
class Labelled:
    classes: list[str]  # the dataset's class names, in training's order (sorted folder names, CIFAR's label names)
    labels: np.ndarray  # (N,) int64 into classes
    names: list[str]  # each image's name in the results: its path relative to the data, or cifar's batch:index
    paths: list[str] | None = None  # image files to decode, or
    pixels: np.ndarray | None = None  # (N, 3, 32, 32) uint8 CIFAR images
    split: str = ""  # which images, in words
    held_out: tuple[float, int] | None = None  # (val_fraction, seed): keep only the held-out share once decoded
    skipped: list[dict] = field(default_factory=list)  # found while listing: not an image, empty, broken link


def load(data_path: str, split: str, val_fraction: float, seed: int, columns: str | None = None,
         image_root: str | None = None) -> Labelled:
    """split: auto (the layout's test set if it has one, else every image), test (the held-out share of class
    folders that have no test/, by val_fraction and seed), all. columns, image_root: a manifest's, as training's
    --columns and --image_root."""
    path = Path(data_path)
    check_folder(path)
    layout = detect_layout(path, columns, image_root)
    if layout.kind in ("cifar-batches", "cifar-tar"):
        arrays = cifar.read_tar(layout.path) if layout.kind == "cifar-tar" else cifar.read_batches_folder(layout.path)
        test = split != "all"
        pixels = arrays.test_x if test else np.concatenate([arrays.train_x, arrays.test_x])
        labels = arrays.test_y if test else np.concatenate([arrays.train_y, arrays.test_y])
        offset = 0 if test else len(arrays.train_x)
        names = [f"{cifar.TEST_BATCH}:{i - offset}" if i >= offset else f"train:{i}" for i in range(len(labels))]
        return Labelled(list(arrays.classes), labels.astype(np.int64), names, pixels=pixels,
                        split=cifar.TEST_BATCH if test else "every image (train batches and test_batch)")
    listing = folders.list_images(layout)
    keep = np.ones(len(listing.paths), dtype=bool)
    held_out = None
    if split == "all":
        described = "every image"
    elif listing.test_split:  # a test/ (or val/) folder, or a manifest's test rows
        keep = np.asarray(listing.splits) == folders.TEST
        described = f"{listing.test_split}/" if layout.test_dir else listing.test_split
    elif split == "test":
        held_out = (val_fraction, seed)
        described = f"held-out {val_fraction:.0%} per class (seed {seed}), as training drew it"
    else:
        described = "every image (no test/ folder)" if not listing.source else "every row"
    index = np.flatnonzero(keep)
    if not len(index):
        raise DataError(f"no images to evaluate in {printable(data_path)} ({described})")
    return Labelled(list(listing.classes), np.asarray(listing.labels, dtype=np.int64)[index],
                    [listing.rels[i] for i in index], paths=[listing.paths[i] for i in index], split=described,
                    held_out=held_out, skipped=list(listing.skipped))


def model_labels(data: Labelled, model_classes: list[str]) -> np.ndarray:
    """The data's labels as indices into the model's classes, matched by name; DataError naming unknown classes."""
    position = {name: i for i, name in enumerate(model_classes)}
    unknown = [name for name in data.classes if name not in position]
    if unknown:
        shown = ", ".join(printable(n) for n in unknown[:10])
        raise DataError(f"the data has classes the model was not trained on: {shown}; the model knows "
                        f"{', '.join(printable(n) for n in model_classes[:20])}; evaluate on data with the model's "
                        "classes (folder names must match)")
    mapping = np.array([position[name] for name in data.classes], dtype=np.int64)
    return mapping[data.labels]


def held_out_rows(labels: np.ndarray, readable: np.ndarray, num_classes: int,
                  held_out: tuple[float, int]) -> np.ndarray:
    """Indices of the held-out images: training's stratified draw over the readable ones."""
    rows = np.flatnonzero(readable)
    _, test, _ = folders.stratified_split(labels[rows], num_classes, *held_out)
    return rows[test]
