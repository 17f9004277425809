"""Decoded image-folder cache: one .npz per (dataset files, image size), outside the data folder.

Decoding tens of thousands of JPEGs takes minutes on a small VM; reading the .npz back takes seconds. The key hashes the
resolved data path and every file's relative path, size, mtime_ns, ctime_ns and inode, so any added, removed or
rewritten file gives a new key (a rewrite that restores the size and mtime still changes the ctime). A cache file
is used only when its arrays have the shapes and types a decode would give; anything else is decoded again. The
train/test split is made after loading, so changing --seed or --val_fraction reuses the cache. Two runs that need
the same entry at once (one --cache_dir, two jobs) decode it once: the second waits for the first (locks.one_maker).
"""

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from trainjob import contract
from trainjob.data import npz_store
from trainjob.locks import one_maker

CACHE_VERSION = 2  # bump when the decoding policy or the key changes, so old caches are never read (2: ctime, inode)
OFF = ("off", "none", "no", "false", "0")


def resolve_cache_dir(cache_dir: str | None, data_root: Path | None, log: Callable[[str], None]) -> Path | None:
    """The folder to cache in, or None (off, or unusable: a cache never stops a run). data_root: None for data
    that has no folder (--demo)."""
    if cache_dir is not None and cache_dir.strip().lower() in OFF:
        return None
    explicit = cache_dir is not None
    folder = Path(cache_dir).expanduser() if explicit else Path(contract.DEFAULT_CACHE_DIR).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        folder = folder.resolve()
        usable = os.access(folder, os.W_OK | os.X_OK)
    except OSError as e:
        usable, reason = False, e.strerror or str(e)
    else:
        reason = "not writable"
    if usable and data_root is not None and folder.is_relative_to(data_root.resolve()):
        usable, reason = False, "inside the data folder (it would change the dataset it caches)"
    if not usable:
        if explicit:  # the default location failing is normal (read-only home): stay quiet then
            log(f"cache: not using {folder} ({reason}); decoding without a cache")
        return None
    return folder


def cache_key(data_root: Path, layout: str, files: Iterable[tuple], image_size: int) -> str:
    """files: (relative path as bytes, then numbers: size, mtime_ns, ...) for every file in the dataset, in order."""
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}\0{layout}\0{image_size}\0".encode())
    digest.update(os.fsencode(str(data_root.resolve())) + b"\0")
    for rel, *numbers in files:
        digest.update(rel + b"\0" + "".join(f"{n}\0" for n in numbers).encode())
    return digest.hexdigest()


def cache_file(folder: Path, key: str) -> Path:
    return folder / f"images-{key[:24]}.npz"


def load(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent, unreadable, written for another key or not what a decode writes."""
    return npz_store.load(path, key, _well_formed)


def _well_formed(arrays: dict[str, np.ndarray]) -> bool:
    """What a decode writes: (N, 3, S, S) uint8 images, N labels and splits, as many skipped paths as reasons."""
    needed = ("images", "labels", "splits", "skipped_paths", "skipped_reasons")
    if any(name not in arrays for name in needed):
        return False
    images, n = arrays["images"], len(arrays["images"])
    return (images.dtype == np.uint8 and images.ndim == 4 and images.shape[1] == 3
            and images.shape[2] == images.shape[3] and arrays["labels"].shape == (n,)
            and arrays["labels"].dtype == np.int64 and arrays["splits"].shape == (n,)
            and arrays["skipped_paths"].shape == arrays["skipped_reasons"].shape)


def save(path: Path, arrays: dict[str, np.ndarray], key: str, log: Callable[[str], None]) -> bool:
    """Write atomically, so a killed run never leaves half a cache; a failed write is logged, never raised."""
    return npz_store.save_cached(path, key, arrays, log, "decodes again")


def load_or_make(path: Path | None, key: str, make: Callable[[], dict[str, np.ndarray]],
                 log: Callable[[str], None]) -> tuple[dict[str, np.ndarray], str | None]:
    """(the arrays, the cache file they are in or None): the cached ones at path, else make()'s, written there. A run
    that finds another making the same entry waits for it, then reads what it wrote. path None: no cache."""
    if path is None:
        return make(), None
    arrays = _hit(path, key, log)
    if arrays is None:
        with one_maker(path, f"cache: another run is decoding the same images into {path}; waiting for it", log):
            arrays = _hit(path, key, log)  # what the run we waited for wrote
            if arrays is None:
                arrays = make()
                if not save(path, arrays, key, log):
                    return arrays, None
                log(f"cache written: {path}")
    return arrays, str(path)


def _hit(path: Path, key: str, log: Callable[[str], None]) -> dict[str, np.ndarray] | None:
    arrays = load(path, key)
    if arrays is not None:
        log(f"cache hit: {path} (decoding skipped)")
    return arrays
