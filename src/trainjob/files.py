"""Writing results safely: an output folder checked up front, atomic replaces, and a full disk named as such.

Every result is written to a temporary file in the same folder, fsynced, then os.replace()d over the old one, so a
crash, SIGKILL or full disk mid-write never leaves a truncated model.pt or checkpoint behind.
"""

import contextlib
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
        _prove_writable(out)
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out}: {e.strerror or e}; pass --output_dir a writable "
                        "folder (with docker: -v \"$PWD/outputs:/outputs\" and --user \"$(id -u):$(id -g)\")") from None
    checkpoints = out / contract.CHECKPOINT_DIR
    if checkpoints.is_symlink():  # files are replaced atomically (a link is replaced, not followed); a folder is not
        raise UserError(f"{checkpoints} is a symlink (to {os.readlink(checkpoints)}): trainjob writes only inside "
                        "its output folder; remove the link or pass another --output_dir")
    return out


def _prove_writable(folder: Path) -> None:
    """Create folder and a file in it, or raise the OSError that says why not."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
        pass


def checkpoint_dir(cfg, output_dir: Path) -> Path:
    """--checkpoint_dir, or <output_dir>/checkpoints."""
    return Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else Path(output_dir) / contract.CHECKPOINT_DIR


def prepare_checkpoint_dir(cfg, output_dir: Path) -> Path:
    """The checkpoint folder, proven writable up front when --checkpoint_dir moves it out of the output folder (on
    Azure ML a datastore mount, where a missing write permission would otherwise surface at the first checkpoint)."""
    folder = checkpoint_dir(cfg, output_dir)
    if cfg.checkpoint_dir:
        try:
            _prove_writable(folder)
        except OSError as e:
            raise UserError(f"cannot write to --checkpoint_dir {folder}: {e.strerror or e}; pass a writable folder "
                            "(or leave the flag out: checkpoints then go to <output_dir>/checkpoints)") from None
    return folder


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


@contextlib.contextmanager
def output_dir_lock(out: Path, enabled: bool = True):
    """Hold <out>/.lock while the block runs (the kernel drops it if the process dies, even by SIGKILL): a second
    run into the same folder would race on its checkpoints and results."""
    if not enabled:
        yield
        return
    fd = _lock(out)
    try:
        yield
    finally:
        os.close(fd)


def _lock(out: Path) -> int:
    import fcntl

    path = out / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        raise UserError(f"cannot open {path}: {e.strerror or e} (a symlink is refused); remove it or pass another "
                        "--output_dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = path.read_text().strip() or "another process"
        error = UserError(f"another trainjob run ({holder}) is writing to {out}: wait for it to finish, or pass "
                          "another --output_dir")
        error.writes_failure_file = False  # that folder belongs to the running job
        raise error from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}\n".encode())
    return fd


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
