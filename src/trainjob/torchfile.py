"""Reading a torch file a user names (a model.pt, pretrained weights): a regular file of bounded size, loaded with
weights_only=True from the very file that was checked.

A path can name a folder, a device that never ends (/dev/zero), a FIFO that blocks until a writer opens it and may
then stream forever, or a sparse file of a terabyte: each is refused in one line before a byte is read, not hashed or
unpickled until memory or patience runs out. torch.load reads the open file, so a file renamed into place after the
check (or after its sha256) is not the one loaded. Nothing here imports a training module: scoring uses it.
"""

import hashlib
import os
import pickle
import re
import stat
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

import torch

from trainjob.errors import UserError

# The biggest files read here: convnext_tiny's ImageNet weights (109 MB, the largest backbone in backbones.py; the
# others are 10-98 MB) and a transfer model.pt built on it (~111 MB of weights). Four times that leaves room for all
# of them; past it no file is one of these, and reading it would only cost time and memory.
MAX_BYTES = 512 << 20

# What torch.load raises on a file that is not a torch file of tensors (found by mutating real model.pt files:
# damaged zips, cut pickles, bad UTF-8, out-of-range references) and on a pickle that asks to run code.
_LOAD_ERRORS = (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, TypeError, AttributeError,
                pickle.UnpicklingError, zipfile.BadZipFile)


class Unloadable(Exception):
    """torch.load refused the file; the message says why in a few words."""


def open_checked(path, what: str, fix: str, limit: int = MAX_BYTES) -> BinaryIO:
    """path opened for binary reading, when it is a regular file of at most limit bytes; UserError naming what it is
    otherwise ("no {what} at PATH: {fix}", "PATH is a folder: {fix}", ...)."""
    try:
        # O_NONBLOCK: a FIFO opens at once and is refused below, where a plain open would wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(f"no {what} at {path}: {fix}") from None
    except PermissionError:
        raise UserError(f"cannot read {path}: permission denied") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path} ({e.strerror or e}): {fix}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UserError(f"{path} is a folder: {fix}")
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path} is not a regular file (a device, FIFO or socket never holds a {what}): {fix}")
        if info.st_size > limit:
            raise UserError(f"{path} is {info.st_size / 1e6:,.0f} MB, more than any {what} ({limit >> 20} MB at "
                            f"most): {fix}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_blocks(f: BinaryIO, path, limit: int = MAX_BYTES) -> Iterator[bytes]:
    """f's bytes from where it stands, 1 MB at a time; UserError once more than limit came (a file whose size grew
    after open_checked, or whose reported size lied, as files of /proc and some network mounts do)."""
    total = 0
    try:
        while block := f.read(1 << 20):
            total += len(block)
            if total > limit:
                raise UserError(f"{path} goes on past {limit >> 20} MB while being read (still growing, or not a "
                                "file of fixed size): pass a finished file")
            yield block
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def sha256(f: BinaryIO, path, limit: int = MAX_BYTES) -> str:
    """The sha256 of f's bytes (read at most limit of them), then f back at its start for torch.load."""
    digest = hashlib.sha256()
    for block in read_blocks(f, path, limit):
        digest.update(block)
    f.seek(0)
    return digest.hexdigest()


def load(f: BinaryIO):
    """torch.load(f) on the CPU with weights_only=True: tensors and plain containers, never a pickled call."""
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as e:
        raise Unloadable(_why(e)) from None


def _why(e: Exception) -> str:
    # torch's weights-only unpickler names the callable a pickle asked for ("GLOBAL posix.system"): say that, not
    # its paragraph about weights_only's history.
    called = re.search(r"GLOBAL ([\w.]+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
    if called:
        return f"it is a pickle that would call {called[1]}, which trainjob never runs"
    return type(e).__name__
