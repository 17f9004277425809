"""Writing a file so that a crash never leaves half of it, and a full disk is named as such.

Every result is written to a temporary file in the same folder, fsynced, then os.replace()d over the old one, so a
crash, SIGKILL or full disk mid-write never leaves a truncated model.pt or checkpoint behind.

A full disk (ENOSPC) or spent quota (EDQUOT) is a DiskFull: one line naming the folder and the space the whole file
needs. To know that size the write goes on into nothing once the disk is full (_Sink), and that also keeps the error
an OSError: torch.save turns an OSError raised by the file it writes to into a RuntimeError ("unexpected pos").

Blob storage mounted with FUSE (blobfuse2, Azure ML's rw_mount) is not a POSIX disk: a rename there is a copy and a
delete, not atomic, and can fail with EIO (sometimes after it happened); fsync uploads the file or is refused; a
directory's fsync may be refused. Where the file system refuses, the write falls back to rewriting the file in place
(said once per folder): a crash then can tear that one file, which is why checkpoints keep previous.pt.
"""

import errno
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from trainjob.errors import DiskFull

# How a file system says it does not do an operation (FUSE answers ENOSYS, blobfuse2 EIO for a rename it failed).
REFUSED_SYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
REFUSED_RENAME = REFUSED_SYNC | {errno.EIO, errno.EPERM, errno.EACCES, errno.EBUSY, errno.EXDEV}
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # how a disk or a quota says it is full
_warned: set[Path] = set()


def atomic_write(path: Path, write: Callable[[object], None], binary: bool = True) -> None:
    """Write path through write(file) into a temp file beside it, fsync, then replace path in one step. A full disk
    is DiskFull, with the temp file removed and path as it was. Text (binary=False) is written as UTF-8."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    sink = _Sink(os.fdopen(fd, "wb"), text=not binary)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results should read like any file the user writes
            write(sink)
            sink.flush()
            sink.sync()
        finally:
            sink.close()
        if sink.full is not None:
            raise sink.full
        move(Path(tmp), path)  # closed first: blobfuse2 refuses to rename a file it has not uploaded yet
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in FULL:
            raise disk_full(e, path, sink.end) from None
        raise


def append_whole(fd: int, data: bytes, path: Path, sync: bool = False, then: str | None = None) -> None:
    """Add data at the end of the file open at fd (path), whole or not at all: where the disk is full, the file is
    cut back to where it ended (no half line for a reader, or a rerun, to trip on) and DiskFull raised."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:  # one write; the loop only for a short write to a full or remote disk
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    except OSError as e:
        if e.errno not in FULL:
            raise
        os.ftruncate(fd, start)
        os.lseek(fd, start, os.SEEK_SET)
        raise disk_full(e, path, len(data), appending=True, then=then) from None


def disk_full(error: OSError, path: Path, needed: int, **kwargs) -> DiskFull:
    """The DiskFull for error, met writing path (needed bytes), with what the file system says is free now."""
    try:
        stat = os.statvfs(Path(path).parent)
        free = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    return DiskFull(path, needed, free, quota=error.errno == errno.EDQUOT, **kwargs)


class _Sink:
    """The file a write callable writes to: bytes go to the temp file until the disk is full, then are only counted,
    so the callable finishes and the error can say how large the whole file is. No fileno(): PIL would write around
    it. Positions are tracked here (zipfile, under np.savez, seeks back to patch its headers)."""

    def __init__(self, file, text: bool):
        self._file, self._text = file, text
        self.pos = self.end = 0  # bytes: where the next write goes, and the file's length
        self.full: OSError | None = None  # the ENOSPC or EDQUOT met, after which nothing more is written

    def write(self, data) -> int:
        raw = data.encode() if self._text else data
        self._do(self._file.write, raw)
        size = memoryview(raw).nbytes
        self.pos += size
        self.end = max(self.end, self.pos)
        return len(data) if self._text else size

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.end}[whence] + offset
        self._do(self._file.seek, self.pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        self._do(self._file.flush)

    def sync(self) -> None:
        self._do(lambda: fsync_file(self._file.fileno()))

    def close(self) -> None:
        try:
            self._file.close()  # a full disk while flushing the rest: the file is closed all the same
        except OSError as e:
            if e.errno not in FULL:
                raise
            self.full = self.full or e

    def read(self, *args):  # np.savez takes an object with read() for a file, and never calls it
        raise io.UnsupportedOperation("write-only")

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def _do(self, operation: Callable, *args) -> None:
        if self.full is not None:
            return
        try:
            operation(*args)
        except OSError as e:
            if e.errno not in FULL:
                raise
            self.full = e


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
