"""Exceptions that carry an exit code. A user error prints one line; anything else is a bug and keeps its traceback."""

import functools
from collections.abc import Callable
from pathlib import Path

from trainjob import contract
from trainjob.text import say


class UserError(Exception):
    """Something the user can fix. The message is one line: the problem, what was expected, what was found."""

    exit_code = contract.EXIT_USER
    writes_failure_file = True  # False where the output folder itself is the problem


class DataError(UserError):
    """The dataset is missing or malformed."""


class DiskFull(UserError):
    """A write met a full disk (ENOSPC) or a spent quota (EDQUOT). Nothing was left under the file's name: the file
    there before, if any, is as it was. needed: bytes the whole file (appending: the rows being added) needs; free:
    bytes the file system said were free, or None."""

    def __init__(self, path, needed: int, free: int | None, quota: bool = False, appending: bool = False,
                 then: str | None = None):
        self.path, self.needed, self.free, self.quota = Path(path), needed, free, quota
        self.appending = appending
        what = "disk quota exceeded" if quota else "no space left on the device"
        then = then or "free some space there and run the same command again (the earlier files were kept)"
        super().__init__(f"{what} while writing {self.path.name} in {self.path.parent}: {self.shortfall()}; {then}")

    def shortfall(self) -> str:
        """"it needs 1.2 MB, 300 kB free there": what a caller that carries on (a cache) says too."""
        needs = f"it needs {amount(self.needed)}{' more' if self.appending else ''}"
        return needs if self.free is None or self.quota else f"{needs}, {amount(self.free)} free there"


def amount(n: int) -> str:
    """Bytes for people: 900 bytes, 12 kB, 3.4 MB, 1.2 GB (decimal units, as df -H and file managers)."""
    if n < 1000:
        return f"{n} bytes"
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{-(-n // 1000)} kB"


class DivergedError(Exception):
    """The loss became NaN or infinite."""

    exit_code = contract.EXIT_DIVERGED


class Stopped(Exception):
    """A signal asked the run to stop; a checkpoint was written before this is raised."""

    def __init__(self, signal_name: str, exit_code: int, checkpoint: str | None, kept: str | None = None):
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.checkpoint = checkpoint
        where = f"resumable from {checkpoint}" if checkpoint else (kept or "no checkpoint was written")
        super().__init__(f"stopped by {signal_name}; {where}; run the same command again to resume")


def user_errors_exit(main: Callable[..., int]) -> Callable[..., int]:
    """A subcommand's main (predict, export, serve, weights): a UserError is one `error: ...` line on stderr and its
    exit code (2), as `train` itself ends one; anything else is a bug and keeps its traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            say(f"error: {e}", err=True)  # it may quote a data or model file
            return e.exit_code

    return wrapper
