"""The progress display behind --progress: a tqdm bar, plain lines, or nothing; for training, decoding, extraction.

auto is a bar on a terminal and lines otherwise: container and cloud logs have no terminal, and a bar redrawn there
would fill them with carriage returns. Only the main process (rank 0) shows progress: torchrun's ranks share one log.
"""

import functools
import sys
import time
from collections.abc import Callable

from trainjob.watchdog import beat

STEP_LINES_EVERY_S = 30.0  # an epoch takes minutes: a line every 30 s keeps a day-long log readable
IMAGE_LINES_EVERY_S = 5.0  # decoding comes before any other output: a silent minute there looks like a hang
STEP_LINE = "{what}: {done}/{total} steps ({share:.0%}), {speed}, about {eta:.0f} s left"
IMAGE_LINE = "{what}: {done}/{total} ({rate:.0f}/s, about {eta:.0f} s left)"

_print = functools.partial(print, flush=True)  # a line held in stdout's buffer says nothing about a run that hangs


def speed(steps_per_second: float) -> str:
    """'1234 steps/s', '2.5 steps/s', or '2.4 s/step' below one step a second (large batches on slow CPUs)."""
    if steps_per_second >= 10:
        return f"{steps_per_second:.0f} steps/s"
    if steps_per_second >= 1:
        return f"{steps_per_second:.1f} steps/s"
    return f"{1 / max(steps_per_second, 1e-9):.1f} s/step"


class Progress:
    """One display at a time: begin() (or start() for an epoch), update() or advance(), close().

    mode: auto, bar, lines or off (--progress); enabled: False on the other ranks (then nothing is shown).
    every: seconds between lines.
    phase: given, every update beats the stall watchdog in that phase, shown or not (the training loop beats its own).
    """

    def __init__(self, mode: str = "auto", enabled: bool = True, every: float = STEP_LINES_EVERY_S, *,
                 unit: str = "step", line: str = STEP_LINE, log: Callable[[str], None] = _print,
                 phase: str | None = None):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode if enabled else "off"
        self.every, self.unit, self.line, self.log, self.phase = every, unit, line, log, phase
        self._bar = None

    @classmethod
    def images(cls, total: int, what: str, log: Callable[[str], None], mode: str = "auto", enabled: bool = True,
               done: int = 0) -> "Progress":
        """Begun for decoding or extracting `total` images (`done` of them already, by an earlier run)."""
        progress = cls(mode, enabled, IMAGE_LINES_EVERY_S, unit="img", line=IMAGE_LINE, log=log, phase=what)
        progress.begin(total, what, done)
        return progress

    def start(self, epoch: int, epochs: int, total: int, done: int) -> None:
        """One training epoch of `total` steps, `done` of them already (a resumed run)."""
        self.begin(total, f"epoch {epoch + 1}/{epochs}", done)

    def begin(self, total: int, what: str, done: int = 0) -> None:
        self.close()
        self._beat()  # a stall before the first update is then reported in this phase
        self.what, self.total, self.done, self._first = what, total, done, done
        self._t0 = self._last = time.monotonic()
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc=what, unit=self.unit, dynamic_ncols=True, leave=False)

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def update(self, done: int) -> None:
        """`done` of `total` finished."""
        self._beat()
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        if self.mode != "lines":
            return
        now = time.monotonic()
        if now - self._last >= self.every and done < self.total:  # at the end the caller's own summary follows
            rate = (done - self._first) / max(now - self._t0, 1e-9)  # this run's pace: chunks a resume found took none
            eta = (self.total - done) / max(rate, 1e-9)
            self.log(self.line.format(what=self.what, done=done, total=self.total, share=done / self.total,
                                      rate=rate, speed=speed(rate), eta=eta))
            self._last = now

    def _beat(self) -> None:
        if self.phase is not None:
            beat(self.phase)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
