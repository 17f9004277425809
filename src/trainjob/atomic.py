"""Writing a file so that a crash never leaves half of it, and a full disk is named as such.

Every result is written to a temporary file in the same folder, fsynced, then os.replace()d over the old one, so a
crash, SIGKILL or full disk mid-write never leaves a truncated model.pt or checkpoint behind.

Blob storage mounted with FUSE (blobfuse2, Azure ML's rw_mount) is not a POSIX disk: a rename there is a copy and a
delete, not atomic, and can fail with EIO (sometimes after it happened); fsync uploads the file or is refused; a
directory's fsync may be refused. Where the file system refuses, the write falls back to rewriting the file in place
(said once per folder): a crash then can tear that one file, which is why checkpoints keep previous.pt.
"""

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from trainjob.errors import UserError

# How a file system says it does not do an operation (FUSE answers ENOSYS, blobfuse2 EIO for a rename it failed).
REFUSED_SYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
REFUSED_RENAME = REFUSED_SYNC | {errno.EIO, errno.EPERM, errno.EACCES, errno.EBUSY, errno.EXDEV}
_warned: set[Path] = set()


def atomic_write(path: Path, write: Callable[[object], None], binary: bool = True) -> None:
    """Write path through write(file) into a temp file beside it, fsync, then replace path in one step."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results should read like any file the user writes
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            fsync_file(f.fileno())
        move(Path(tmp), path)  # closed first: blobfuse2 refuses to rename a file it has not uploaded yet
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left on the device while writing {path}: free some space or pass "
                            "--output_dir on a larger disk (earlier results were left untouched)") from None
        raise


def move(src: Path, dst: Path) -> None:
    """os.replace(src, dst) and make it durable; where the file system refuses the rename, copy src over dst in
    place and remove src (not atomic: a crash mid-copy can tear dst, never src)."""
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno not in REFUSED_RENAME or not (src.exists() or dst.exists()):
            raise
        if src.exists():  # else blobfuse2 reported EIO for a rename it did do: src is gone, dst is whole
            _note(dst.parent, f"rename refused ({os.strerror(e.errno)})")
            _copy_in_place(src, dst)
            os.unlink(src)
    fsync_dir(dst.parent)


def _copy_in_place(src: Path, dst: Path) -> None:
    with open(src, "rb") as source, open(dst, "wb") as target:
        while chunk := source.read(1 << 20):
            target.write(chunk)
        target.flush()
        fsync_file(target.fileno())


def fsync_file(fd: int) -> None:
    """fsync, unless the file system does not do it (then close() carries the upload, and its error)."""
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in REFUSED_SYNC:
            raise


def fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable: until its directory entry is on disk, a power cut can undo the rename.
    A file system that cannot open or fsync a directory (a FUSE mount of blob storage) has nothing to make durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        if e.errno not in REFUSED_SYNC | {errno.EACCES, errno.EPERM}:
            raise
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in REFUSED_SYNC | {errno.EACCES, errno.EPERM}:
            raise
    finally:
        os.close(fd)


def _note(folder: Path, what: str) -> None:
    if folder not in _warned:
        _warned.add(folder)
        print(f"note: {folder}: {what}; files there are rewritten in place, not swapped atomically (a blob storage "
              "mount); checkpoints keep previous.pt for a torn latest.pt", flush=True)


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
