"""One maker at a time for a file that several processes may want at once: a cache entry that two runs sharing one
--cache_dir decode or extract together, the ONNX export that every `train predict` of one model would make.

Publishing is already safe without this (each writer's temporary file is renamed into place whole), but the second
process would redo minutes of the first one's work. With it the process that comes second says so in one line,
waits, and then finds the file made. The lock is flock(2) on a hidden file beside the entry: the kernel drops it when
its holder exits, even by SIGKILL, so a crashed maker never leaves the others waiting. Lock files are left in place
(empty): removing one while another process waits on it would let a third take a lock on a new file.
"""

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from trainjob.watchdog import beat

POLL_S = 0.5  # how often a waiting process tries the lock again (a blocking flock could not be interrupted cleanly)
# A file system without locks (some FUSE mounts, NFS without lockd) answers these: then no one waits.
NO_LOCKS = frozenset({errno.ENOLCK, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def lock_file(entry: Path) -> Path:
    """The lock beside entry: <folder>/.<name>.lock."""
    return entry.with_name(f".{entry.name}.lock")


@contextlib.contextmanager
def one_maker(entry: Path, waiting: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold entry's lock while the block runs; a process that finds it held logs `waiting` once and waits. Where no
    lock can be had (a read-only folder, a file system without locks) the block runs unlocked."""
    try:
        fd = os.open(lock_file(entry), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError:
        fd = None
    try:
        if fd is not None:
            _take(fd, waiting, log)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _take(fd: int, waiting: str, log: Callable[[str], None]) -> None:
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if not said:
                log(waiting)
                said = True
            beat()  # waiting on another process's work is not a stall of this run (the watchdog)
            time.sleep(POLL_S)
        except OSError as e:
            if e.errno in NO_LOCKS:
                return
            raise
