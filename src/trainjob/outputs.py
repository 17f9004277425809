"""The output folder: where it is, proven writable before any work, locked against a second run, and the
failure.txt a failed run leaves in it."""

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from trainjob import contract
from trainjob.atomic import append_whole, atomic_write
from trainjob.errors import DiskFull, UserError


def resolve_output_dir(flag: str | None, environ: Mapping[str, str]) -> str:
    """--output_dir, else ./outputs inside an Azure ML run (which uploads it, whatever the image's OUTPUT_DIR), else
    $OUTPUT_DIR, else the default."""
    if flag:
        return flag
    if environ.get(contract.ENV_AZUREML_RUN_ID):
        return contract.AZUREML_OUTPUT_DIR
    return environ.get(contract.ENV_OUTPUT_DIR) or contract.DEFAULT_OUTPUT_DIR


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
    try:
        append_whole(fd, f"pid {os.getpid()}\n".encode(), path)  # what a second run's refusal names
    except DiskFull:
        os.close(fd)
        raise  # a folder without room for ten bytes has none for a checkpoint: say so now, not an epoch later
    return fd


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
