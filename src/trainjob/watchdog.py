"""The stall watchdog: no progress for --stall_timeout seconds ends the run with failure.txt and exit 4.

Progress is any beat(): a training step, a decoded or extracted chunk of images, an evaluated chunk, a checkpoint. A
hung network mount, a decoder stuck in C or a deadlocked library would otherwise keep a cluster node busy for hours
with no output. The watchdog is a daemon thread, not a signal, because the main thread may be the one that is stuck
(in C code, where Python runs no signal handler). The heartbeat is process-wide on purpose: every phase of a run, in
whichever module, beats the same clock.
"""

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from trainjob import contract

_last_beat = time.monotonic()
_phase = "starting"


def beat(phase: str | None = None) -> None:
    """Record progress (cheap: call it every step)."""
    global _last_beat, _phase
    _last_beat = time.monotonic()
    if phase is not None:
        _phase = phase


class Watchdog:
    def __init__(self, timeout: float, on_stall: Callable[[str], None]):
        self.timeout, self.on_stall = timeout, on_stall
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        beat("starting")
        if self.timeout > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(min(5.0, self.timeout / 4)):
            idle = time.monotonic() - _last_beat
            if idle > self.timeout:
                self.on_stall(f"error: no progress for {idle:.0f} s while {_phase} (--stall_timeout "
                              f"{self.timeout:g}): a hung mount, a stuck decoder or a deadlock; the last checkpoint "
                              "is kept: run the same command again to resume, or raise --stall_timeout")
                return


def exit_stalled(output_dir: str | os.PathLike | None, is_main: bool = True) -> Callable[[str], None]:
    """What a stall does in a real run: the reason on stderr and in failure.txt (from the main process only), then
    exit 4 at once (the stuck thread cannot be unwound)."""
    from trainjob.outputs import write_failure

    def stalled(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if is_main:
            write_failure(Path(output_dir) if output_dir else None, line)
        os._exit(contract.EXIT_STALLED)

    return stalled
