"""What one training run knows about where it runs, built once by job.train and passed down (the recipe's
load_data, the Trainer, the trackers), so that no room reads the environment or works out a folder again."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trainjob.config import Config
from trainjob.environment import Distributed, Environment
from trainjob.signals import StopRequest


@dataclass(frozen=True)
class RunContext:
    cfg: Config
    env: Environment  # the contract's variables as the run started
    d: Distributed  # this process among torchrun's (rank 0 of 1 without it)
    device: torch.device
    output_dir: Path  # proven writable and locked
    checkpoint_dir: Path  # --checkpoint_dir, or <output_dir>/checkpoints
    stop: StopRequest
    started: float  # time.monotonic() when the process started: wall_seconds counts data loading too
    log: Callable[..., None]  # print on the main process; silent on the others

    @property
    def progress(self) -> str:
        """--progress on the main process; "off" on the others (a bar writes to stderr, past the silent log)."""
        return self.cfg.progress if self.d.is_main else "off"

    @property
    def tracks_azureml(self) -> bool:
        """Whether --tracking sends metrics to the SDK v1 run (where there is one, on the main process)."""
        return self.d.is_main and self.cfg.tracking in ("auto", "azureml", "both") and bool(self.env.azureml_run_id)
