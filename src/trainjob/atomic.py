"""Writing a file so that a crash never leaves half of it, and a full disk is named as such.

Every result is written to a temporary file in the same folder, fsynced, then os.replace()d over the old one, so a
crash, SIGKILL or full disk mid-write never leaves a truncated model.pt or checkpoint behind.
"""

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from trainjob.errors import UserError


def atomic_write(path: Path, write: Callable[[object], None], binary: bool = True) -> None:
    """Write path through write(file) into a temp file beside it, fsync, then replace path in one step."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results should read like any file the user writes
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left on the device while writing {path}: free some space or pass "
                            "--output_dir on a larger disk (earlier results were left untouched)") from None
        raise


def fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable: until its directory entry is on disk, a power cut can undo the rename."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_torch(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def save_npz(path: Path, arrays: dict) -> None:
    """numpy arrays as one .npz, atomically (np.load(allow_pickle=False) reads it back)."""
    import numpy as np

    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=str), binary=False)
