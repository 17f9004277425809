"""What a recipe is: a model, how one batch is trained, how a batch is scored, and its resumable state.

The engine owns data order, logging, checkpoints and distribution; a recipe owns the numerics. Batches reach a
recipe as uint8 tensors (B, 3, H, W); normalisation and augmentation happen here, on whole batches.
"""

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import nn

from trainjob.data import Dataset, load_dataset
from trainjob.models import build_model
from trainjob.preprocess import normalize


class Recipe:
    name: ClassVar[str]
    arch: ClassVar[str]
    # A frozen dataclass of every hyperparameter; those named in config.recipe_settings(name) are the values of the
    # flags a user leaves out (config.recipe_defaults). A recipe without a setting (the tutorial's fixed Net has no
    # --width) has no such field, and config refuses the flag.
    hyperparameters: ClassVar[Any]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    drop_last: ClassVar[bool] = False  # whether the engine drops each epoch's last partial batch
    # Test images scored after each epoch but the last (an even stride through the test set; None: all of them).
    # The last epoch, and so every reported accuracy, always scores the whole test set.
    eval_during: ClassVar[int | None] = None
    bf16: ClassVar[bool] = False  # whether --precision bf16 (autocast) applies; the others refuse it

    def __init__(self, cfg, num_classes: int, image_size: int, steps_per_epoch: int, device: torch.device,
                 wrap: Callable[[nn.Module], nn.Module] = lambda m: m, plan=None):
        """plan: the budget.Plan a --time_budget chose (cfg.epochs is its epochs by then); None: the recipe's own."""
        self.cfg = cfg
        self.device = device
        self.arch_kwargs = {"num_classes": num_classes, "image_size": image_size, **self.arch_options(cfg)}
        self.model = build_model(self.arch, **self.arch_kwargs).to(device)
        self.train_model = wrap(self.trainable())  # the DistributedDataParallel wrapper under torchrun, else as is

    @classmethod
    def load_data(cls, ctx) -> Dataset:
        """The dataset as this recipe trains on it (ctx: the run's context.RunContext): uint8 pixels here (the
        transfer recipe: backbone features)."""
        cfg = ctx.cfg
        return load_dataset(cfg.data_path, image_size=cfg.image_size, val_fraction=cfg.val_fraction, seed=cfg.seed,
                            cache_dir=cfg.cache_dir, demo=cfg.demo, log=ctx.log, progress=ctx.progress,
                            columns=cfg.columns, image_root=cfg.image_root)

    def trainable(self) -> nn.Module:
        """The module train_step calls (and DDP wraps): the model, unless a recipe trains on something else."""
        return self.model

    @classmethod
    def arch_options(cls, cfg) -> dict[str, Any]:
        """More arguments for the architecture beyond num_classes and image_size; model.pt records them."""
        return {}

    @classmethod
    def max_threads(cls, cfg) -> int | None:
        """The most torch threads that still speed this recipe up at cfg's batch size (None: no limit)."""
        return None

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                   indices: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a (B, 3, H, W) uint8 batch whose images have these training-set indices;
        returns the detached mean loss (0-d)."""
        raise NotImplementedError

    def timing_points(self) -> dict[str, int]:
        """The steps calibrate.py times before a --time_budget plans, one per kind of step that costs differently:
        {budget.Rates field: step}. One kind here: every step costs the same."""
        return {"step": 0}

    def skip_to(self, step: int) -> None:
        """Move the schedule to step without training: calibrate.py times a later kind of step on a throwaway
        copy of the recipe. Nothing here: the step does not depend on where the schedule stands."""

    @torch.inference_mode()
    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, num_classes) float32 logits, with the recipe's evaluation model."""
        self.model.eval()
        return self.model(normalize(images, self.mean, self.std)).float()

    def state_dict(self) -> dict:
        """Everything a checkpoint needs to continue bit for bit (tensors and plain values only)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def export(self) -> dict:
        """What model.pt holds for `predict`: architecture, its arguments, weights and normalisation."""
        return {
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
        }

    def describe(self) -> dict:
        """Recipe facts for summary.json (precision chosen, and so on)."""
        return {"recipe": self.name, "arch": self.arch}

    def settings(self) -> dict[str, Any]:
        """The hyperparameters this run trains with: the recipe's, with the flags' values over theirs."""
        own = asdict(self.hyperparameters)
        return {**own, **{name: getattr(self.cfg, name) for name in own if hasattr(self.cfg, name)}}

    def startup_note(self) -> str | None:
        """One line for the log before training: a choice made for the user that they should know about."""
        return None
