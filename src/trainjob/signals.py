"""SIGTERM/SIGINT handling: ask the training loop to stop after its current step and checkpoint.

Docker gives a container 10 s after SIGTERM, Kubernetes 30 s, Azure spot eviction about 30 s; finishing one step and
writing a checkpoint takes well under a second. Before training starts there is nothing to save, so a signal then
stops the run at once.
"""

import contextlib
import signal

from trainjob import contract
from trainjob.errors import Stopped

_EXIT_CODES = {signal.SIGTERM: contract.EXIT_SIGTERM, signal.SIGINT: contract.EXIT_SIGINT}


class StopRequest:
    """What a SIGTERM or SIGINT does now. Other rooms change it only through the methods below."""

    def __init__(self):
        self.signum: int | None = None
        self._deferred = False  # while training: a signal only sets signum, and the loop stops at its next step
        self._kept: str | None = None  # what survives a stop outside training, when something does
        self._previous = {}

    def install(self) -> "StopRequest":
        for signum in _EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def defer(self) -> None:
        """From now a signal waits for the training loop, which checkpoints and then raises stopped()."""
        self._deferred = True

    def immediate(self, kept: str | None = None) -> None:
        """From now a signal stops at once (training is over); kept: what the stop message says survives."""
        self._deferred, self._kept = False, kept

    @contextlib.contextmanager
    def keeping(self, kept: str):
        """While the block runs, a stop says that this survives it (features extracted so far, say)."""
        before, self._kept = self._kept, kept
        try:
            yield
        finally:
            self._kept = before

    def stopped(self, checkpoint: str | None) -> Stopped:
        signum = self.signum or signal.SIGTERM
        return Stopped(signal.Signals(signum).name, _EXIT_CODES[signum], checkpoint, self._kept)

    def _handle(self, signum, frame):
        self.signum = signum
        if not self._deferred:
            raise self.stopped(None)
