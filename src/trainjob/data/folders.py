"""Image folders: train/<class>/ + test/<class>/ (or val/), or one <class>/ tree split per class by a seeded draw.

Files are listed once (class = top folder name, sorted; nested sub-folders belong to their class), decoded once in
parallel, cached, then split. Unreadable files are skipped and reported, never fatal, unless a class is left empty.
"""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trainjob.data import cache, manifest
from trainjob.data.dataset import MAX_CLASSES, Dataset, Split
from trainjob.data.decode import decode_all
from trainjob.data.detect import MANIFEST_KINDS, Layout, has_image_extension, is_hidden, printable, walk_files
from trainjob.data.listing import TEST, TRAIN, Listing, skip, stat_reason
from trainjob.errors import DataError
from trainjob.watchdog import beat


def _class_folders(tree: Path) -> list[str]:
    return sorted(name for name in os.listdir(tree) if not is_hidden(name) and (tree / name).is_dir())


def _list_class(listing: Listing, root: Path, folder: Path, label: int, split: int) -> None:
    """Add folder's images, sub-folders included, depth first in sorted order (detect.walk_files)."""
    def unreadable(path: str, e: OSError) -> None:
        skip(listing, os.path.relpath(path, root) + "/", f"folder {stat_reason(e)}")

    for entry in walk_files(str(folder), unreadable):
        beat("listing image files")
        rel = os.path.relpath(entry.path, root)
        try:
            if entry.is_symlink() and os.path.isdir(entry.path):
                skip(listing, rel, "link to a folder (not followed)")
                continue
            st = os.stat(entry.path)  # follows file links; raises for loops and dangling links
        except OSError as e:
            skip(listing, rel, stat_reason(e))
            continue
        listing.identity.append((os.fsencode(rel), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        if not has_image_extension(entry.name):
            skip(listing, rel, "not an image file extension")
        elif st.st_size == 0:
            skip(listing, rel, "empty file")
        else:
            listing.paths.append(entry.path)
            listing.rels.append(printable(rel))
            listing.labels.append(label)
            listing.splits.append(split)


def list_images(layout: Layout) -> Listing:
    if layout.kind in MANIFEST_KINDS:
        return manifest.list_manifest(layout)
    root = layout.path
    train_tree = root / layout.train_dir if layout.train_dir else root
    classes = _class_folders(train_tree)
    where = printable(str(train_tree))
    if layout.test_dir:
        test_classes = _class_folders(root / layout.test_dir)
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DataError(f"{layout.train_dir}/ and {layout.test_dir}/ must hold the same class folders: "
                            f"only in {layout.train_dir}/: {[printable(c) for c in only_train]}, "
                            f"only in {layout.test_dir}/: {[printable(c) for c in only_test]}; "
                            "add or remove folders so both list the same classes")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{where} has {len(classes)} class folders, more than the {MAX_CLASSES} trainjob trains: "
                        "expected one sub-folder per class; point --data_path at the folder that holds them")
    if len(classes) < 2:
        raise DataError(f"{where} has {len(classes)} class folder(s) {[printable(c) for c in classes]}: a classifier "
                        "needs at least 2; put each class's images in its own sub-folder (cat/, dog/, ...)")
    listing = Listing(classes=[printable(c) for c in classes], test_split=layout.test_dir)
    for label, name in enumerate(classes):
        _list_class(listing, root, train_tree / name, label, TRAIN)
        if layout.test_dir:
            _list_class(listing, root, root / layout.test_dir / name, label, TEST)
    return listing


def _decode_or_load(listing: Listing, layout: Layout, image_size: int, cache_dir: str | None,
                    log: Callable[[str], None], progress: str) -> tuple[dict[str, np.ndarray], str | None]:
    """The readable images: arrays images (N, 3, S, S) uint8, labels, splits, rels; plus decode-time skips."""
    folder = cache.resolve_cache_dir(cache_dir, layout.path, log)
    key = cache.cache_key(layout.path, layout.kind, listing.identity, image_size)
    path = cache.cache_file(folder, key) if folder else None

    def decode() -> dict[str, np.ndarray]:
        log(f"decoding {len(listing.paths)} images to {image_size}x{image_size} RGB "
            f"(once; {'cached in ' + str(path) if path else 'no cache'})")
        images, failures = decode_all(listing.paths, image_size, log, progress=progress)  # (N, 3, S, S) uint8
        return readable(listing, images, failures)

    return cache.load_or_make(path, key, decode, log)


def readable(listing: Listing, rows: np.ndarray, failures: dict[int, str]) -> dict[str, np.ndarray]:
    """One row per listed file (pixels, or features) -> the arrays of the readable ones, and the skipped files."""
    keep = np.array([i not in failures for i in range(len(listing.paths))], dtype=bool)
    return {
        "images": rows[keep] if failures else rows,
        "labels": np.asarray(listing.labels, dtype=np.int64)[keep],
        "splits": np.asarray(listing.splits, dtype=np.int8)[keep],
        "skipped_paths": np.array([listing.rels[i] for i in sorted(failures)], dtype=str),
        "skipped_reasons": np.array([failures[i] for i in sorted(failures)], dtype=str),
    }


def _check_every_class(listing: Listing, labels: np.ndarray, splits: np.ndarray, layout: Layout,
                       skipped: list[dict]) -> None:
    trees = [(TRAIN, layout.train_dir)] + ([(TEST, listing.test_split)] if listing.test_split else [])
    for split, tree in trees:
        counts = np.bincount(labels[splits == split], minlength=len(listing.classes))
        for label in np.flatnonzero(counts == 0):
            if listing.source:  # a manifest: name the class and the rows, there is no folder
                raise DataError(manifest.empty_class(listing, int(label), split, skipped))
            folder = f"{tree}/{listing.classes[label]}" if tree else listing.classes[label]
            bad = [s for s in skipped if s["path"].startswith(folder + os.sep)]
            found = f"{len(bad)} files skipped, e.g. {bad[0]['path']} ({bad[0]['reason']})" if bad else "no files"
            raise DataError(f"class folder {folder}/ has no readable image ({found}): expected at least one "
                            ".jpg/.png/... image per class; add images or remove the folder")


def stratified_split(labels: np.ndarray, num_classes: int, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per class, hold out round(n * val_fraction) images (at least 1, never all) by a seeded draw.

    Returns train and test indices (sorted) and the classes with a single image, which stay in train.
    """
    rng = np.random.default_rng(seed)
    train, test, singles = [], [], []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 1:
            singles.append(c)
            train.append(idx)
            continue
        n_test = min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        order = rng.permutation(idx)
        test.append(order[:n_test])
        train.append(order[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test or [np.zeros(0, np.int64)])), singles


def _split(images: torch.Tensor, labels: torch.Tensor, index: np.ndarray) -> Split:
    idx = torch.from_numpy(index.astype(np.int64))
    return Split(inputs=images[idx].contiguous(), labels=labels[idx].contiguous())


def load_image_folders(layout: Layout, *, image_size: int, val_fraction: float, seed: int, cache_dir: str | None,
                       log: Callable[[str], None], features=None, progress: str = "auto") -> Dataset:
    """features: a features.FeatureExtractor, to hold backbone features per image instead of pixels (it shows its
    own progress); progress: the --progress mode of the decoding display."""
    listing = list_images(layout)
    where = f"listed in {listing.source} ({len(listing.classes)} classes)" if listing.source else \
        f"in {len(listing.classes)} class folders"
    log(f"found {len(listing.paths)} image files {where}"
        + (f" ({len(listing.skipped)} other {'rows' if listing.source else 'files'} left out)"
           if listing.skipped else ""))
    if features is None:
        arrays, cache_used = _decode_or_load(listing, layout, image_size, cache_dir, log, progress)
    else:
        identity = cache.cache_key(layout.path, layout.kind, listing.identity, image_size)
        rows, failures = features.for_files(listing.paths, identity)
        arrays, cache_used = readable(listing, rows, failures), None
    skipped = listing.skipped + [{"path": str(p), "reason": str(r)}
                                 for p, r in zip(arrays["skipped_paths"], arrays["skipped_reasons"], strict=True)]
    labels_np, splits_np = arrays["labels"], arrays["splits"]
    _check_every_class(listing, labels_np, splits_np, layout, skipped)
    images = torch.from_numpy(arrays["images"])  # (N, 3, S, S) uint8, or feature rows
    labels = torch.from_numpy(labels_np)
    if listing.test_split:
        train_idx, test_idx = np.flatnonzero(splits_np == TRAIN), np.flatnonzero(splits_np == TEST)
        test_split = listing.test_split
    else:
        train_idx, test_idx, singles = stratified_split(labels_np, len(listing.classes), val_fraction, seed)
        for c in singles:
            log(f"class {listing.classes[c]!r} has a single readable image: kept in train, "
                "so the test set has none of it")
        of = f" of {layout.train_dir}/" if layout.train_dir else ""
        test_split = f"held-out {val_fraction:.0%}{of} per class (seed {seed})"
    return Dataset(train=_split(images, labels, train_idx), test=_split(images, labels, test_idx),
                   classes=listing.classes, format=layout.kind, source=str(layout.path.resolve()),
                   test_split=test_split, skipped=skipped,
                   cache=str(features.store.cached) if features and features.store.cached else cache_used,
                   input_size=(image_size, image_size) if features else None)
