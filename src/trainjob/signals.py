"""SIGTERM/SIGINT handling: ask the training loop to stop after its current step and checkpoint.

Docker gives a container 10 s after SIGTERM, Kubernetes 30 s, Azure spot eviction about 30 s; finishing one step and
writing a checkpoint takes well under a second. Before training starts there is nothing to save, so a signal then
stops the run at once.
"""

import signal

from trainjob import contract
from trainjob.errors import Stopped

_EXIT_CODES = {signal.SIGTERM: contract.EXIT_SIGTERM, signal.SIGINT: contract.EXIT_SIGINT}


class StopRequest:
    def __init__(self):
        self.signum: int | None = None
        self.training = False  # while False, a signal raises Stopped immediately
        self.kept: str | None = None  # what survives a stop before training, when something does (features)
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

    def stopped(self, checkpoint: str | None) -> Stopped:
        signum = self.signum or signal.SIGTERM
        return Stopped(signal.Signals(signum).name, _EXIT_CODES[signum], checkpoint, self.kept)

    def _handle(self, signum, frame):
        self.signum = signum
        if not self.training:
            raise self.stopped(None)
