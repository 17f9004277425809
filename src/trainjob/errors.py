"""Exceptions that carry an exit code. A user error prints one line; anything else is a bug and keeps its traceback."""

import functools
import sys
from collections.abc import Callable

from trainjob import contract


class UserError(Exception):
    """Something the user can fix. The message is one line: the problem, what was expected, what was found."""

    exit_code = contract.EXIT_USER
    writes_failure_file = True  # False where the output folder itself is the problem


class DataError(UserError):
    """The dataset is missing or malformed."""


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
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code

    return wrapper
