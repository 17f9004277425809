"""One .npz file of arrays stored under a key: the decoded-image cache and the transfer recipe's features.

The key (a hash of everything the arrays depend on) is stored beside them as a "key" array, so a file written for
other data, another image size or an older version is never used: it is as good as absent. So is a file that cannot
be read (truncated by a full disk, damaged, not an .npz at all). Files are read with allow_pickle=False, so a file
planted in the cache folder can never run code, and written atomically, so a killed run never leaves half of one.
"""

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainjob.atomic import save_npz
from trainjob.errors import DiskFull, UserError

# What np.load raises on a file that is not a whole .npz: short reads, bad headers, a zip cut mid-way.
UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def load(path: Path, key: str,
         accept: Callable[[dict[str, np.ndarray]], bool] = lambda arrays: True) -> dict[str, np.ndarray] | None:
    """The arrays stored at path (without the key), or None when absent, unreadable, stored for another key, or
    refused by accept (each caller checks that the arrays are what it wrote)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except UNREADABLE:
        return None
    if str(arrays.pop("key", "")) != key or not accept(arrays):
        return None
    return arrays


def save(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Atomic (atomic.atomic_write); a full disk is DiskFull, one line naming the folder and the space needed."""
    save_npz(path, {"key": np.array(key), **arrays})


def save_cached(path: Path, key: str, arrays: dict[str, np.ndarray], log: Callable[[str], None],
                redone: str) -> bool:
    """save(), for a finished cache: a cache never stops a run (not even on a full disk: the run's results do not
    depend on it, and the space it would take is the space the run needs), so a failed write is one log line ending
    in "the next run {redone}", and False. Nothing is left under path's name."""
    try:
        save(path, key, arrays)
        return True
    except DiskFull as e:
        log(f"cache: no space left in {path.parent} for {e.path.name} ({e.shortfall()}); carrying on without it, "
            f"the next run {redone}")
    except (OSError, UserError) as e:
        log(f"cache: could not write {path} ({getattr(e, 'strerror', None) or e}); the next run {redone}")
    return False
