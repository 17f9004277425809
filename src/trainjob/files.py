"""Writing results safely: an output folder checked up front, atomic replaces, and a full disk named as such.

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

from trainjob import contract
from trainjob.errors import UserError


def prepare_output_dir(path: str) -> Path:
    """Create the output folder and prove it is writable before any work is done."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out}: {e.strerror or e}; pass --output_dir a writable "
                        "folder (with docker: -v \"$PWD/outputs:/outputs\" and --user \"$(id -u):$(id -g)\")") from None
    return out


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
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left on the device while writing {path}: free some space or pass "
                            "--output_dir on a larger disk (earlier results were left untouched)") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_torch(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=str), binary=False)


def write_failure(output_dir: str | os.PathLike | None, message: str) -> None:
    """Leave the reason for a failed run where its outputs would have gone, if that folder can be written."""
    if output_dir is None:
        return
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(output_dir) / contract.FAILURE_FILE, lambda f: f.write(message.rstrip() + "\n"), binary=False)
    except (OSError, UserError):
        pass  # the original error is what matters; it is already on stderr


def clear_failure(output_dir: Path) -> None:
    (output_dir / contract.FAILURE_FILE).unlink(missing_ok=True)
