"""`--recipe transfer`: an ImageNet-pretrained backbone and a new head for your classes, for real photos.

Each image is decoded once at the backbone's input size, pushed through the frozen backbone once, and its pooled
features are kept (features.py). The head then trains on those features in seconds; with
--finetune the backbone's last stage trains too, on the cached input of that stage. Batches reach this recipe as
feature rows (B, ...) instead of pixels; the model it exports (models.TransferNet) takes pixels like every
other model.pt, so `predict` needs nothing special.

Every hyperparameter is in HYP below; the flags config.recipe_settings("transfer") names (--learning_rate,
--momentum, --epochs, --batch_size, --image_size, --backbone) override theirs.
"""

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trainjob import backbones
from trainjob.backbone_rates import encoder
from trainjob.data import load_dataset
from trainjob.data.cache import resolve_cache_dir
from trainjob.features import FeatureExtractor, pass_size
from trainjob.recipes.base import Recipe
from trainjob.runtime import choose_precision


@dataclass(frozen=True)
class Hyperparameters:
    # --- optimisation of the head (and the last stage with --finetune); the CLI overrides the first five ---
    learning_rate: float = 0.05  # peak Nesterov-SGD lr, decayed to 0 along a cosine
    momentum: float = 0.9  # Nesterov momentum
    epochs: int = 15  # passes over the cached features
    batch_size: int = 64  # feature rows per step per process
    image_size: int = 256  # pixels per side the backbone sees (Lite0 trained at 224; 256 scores higher: benchmarks.md)
    weight_decay: float = 5e-4  # L2, coupled (SGD's weight_decay)
    label_smoothing: float = 0.1  # share of the target spread over all classes
    tail_lr_scale: float = 0.1  # --finetune: the pretrained last stage learns at this fraction of the head's lr
    backbone: str = backbones.DEFAULT  # the pretrained network (backbones.BACKBONES); the image has its weights
    # No flip augmentation or flip TTA: features of the mirrored images, for training and for evaluation, left the
    # accuracy where it was on photos20 (frozen and fine-tuned) for twice the extraction time (docs/benchmarks.md).


HYP = Hyperparameters()


@functools.lru_cache(maxsize=2)
def pretrained(backbone: str, weights: str | None, weights_sha256: str | None):
    """(trunk, tail, facts), verified once per process: the feature extraction and the recipe share it."""
    return backbones.load_pretrained(backbone, weights, weights_sha256)


class _FromCached(nn.Module):
    """What trains: the cached rows through the (fine-tuned) tail and the head; DDP wraps this, not the pixel path."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.model.from_cached(rows)


class TransferRecipe(Recipe):
    name = "transfer"
    arch = "transfer"
    hyperparameters = HYP
    bf16 = True
    mean = backbones.IMAGENET_MEAN  # every backbone offered was trained on ImageNet with these
    std = backbones.IMAGENET_STD

    @classmethod
    def arch_options(cls, cfg):
        return {"backbone": cfg.backbone, "finetune": bool(cfg.finetune)}

    # --- data: features instead of pixels ---
    @classmethod
    def load_data(cls, ctx):
        cfg, device = ctx.cfg, ctx.device
        trunk, tail, facts = pretrained(cfg.backbone, cfg.weights, cfg.weights_sha256)
        precision = choose_precision(cfg.precision, device)
        # The very encoder a time budget's extraction rate was measured with (backbone_rates.py).
        encode, prepare = encoder(trunk, tail, finetune=bool(cfg.finetune), precision=precision, device=device,
                                  mean=cls.mean, std=cls.std)
        settings = "\0".join([f"{cfg.backbone} {'tail input' if cfg.finetune else 'pooled'}", facts["weights_sha256"],
                              str(cfg.image_size), precision])
        data_root = Path(cfg.data_path) if cfg.data_path and not cfg.demo else None
        extractor = FeatureExtractor(encode, prepare, image_size=cfg.image_size, settings=settings,
                                     chunk_dir=ctx.checkpoint_dir,
                                     cache_dir=resolve_cache_dir(cfg.cache_dir, data_root, ctx.log), d=ctx.d,
                                     log=ctx.log, progress=ctx.progress, pass_images=pass_size(device))
        with ctx.stop.keeping(f"the features extracted so far are kept in {ctx.checkpoint_dir}"):
            return load_dataset(cfg.data_path, image_size=cfg.image_size, val_fraction=cfg.val_fraction,
                                seed=cfg.seed, cache_dir=cfg.cache_dir, demo=cfg.demo, log=ctx.log,
                                features=extractor, progress=ctx.progress, columns=cfg.columns,
                                image_root=cfg.image_root)

    # --- the model ---
    def __init__(self, cfg, num_classes, image_size, steps_per_epoch, device, wrap=lambda m: m, plan=None):
        super().__init__(cfg, num_classes, image_size, steps_per_epoch, device, wrap, plan)
        trunk, tail, self.facts = pretrained(cfg.backbone, cfg.weights, cfg.weights_sha256)
        self.model.trunk.load_state_dict(trunk.state_dict())
        self.model.tail.load_state_dict(tail.state_dict())
        self.precision = choose_precision(cfg.precision, device) if cfg.finetune else "fp32"  # a head alone: fp32
        self.total_steps = max(1, steps_per_epoch) * cfg.epochs
        self.step = 0
        groups = [{"params": list(self.model.head.parameters()), "lr": cfg.learning_rate}]
        if cfg.finetune:
            groups.append({"params": list(self.model.tail.parameters()), "lr": cfg.learning_rate * HYP.tail_lr_scale})
        self.optimizer = torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=cfg.momentum, nesterov=True,
                                         weight_decay=HYP.weight_decay)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def trainable(self) -> nn.Module:
        # Frozen before DistributedDataParallel sees the parameters: it averages the gradients of those that learn.
        self.model.requires_grad_(False)
        for module in [self.model.head] + ([self.model.tail] if self.cfg.finetune else []):
            module.requires_grad_(True)
        return _FromCached(self.model)

    def lr_factor(self, step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))

    def train_step(self, images, labels, generator, indices):
        rows = self._input(images)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.lr_factor(self.step)
        self.model.eval()  # the backbone's BatchNorm keeps its ImageNet statistics, also in a fine-tuned tail
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.train_model(rows)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=HYP.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.detach()

    @staticmethod
    def _input(rows: torch.Tensor) -> torch.Tensor:
        """(B, ...) float16 rows -> float32, channels-last where they are the tail's (B, C, h, w) input."""
        rows = rows.float()
        return rows.contiguous(memory_format=torch.channels_last) if rows.dim() == 4 else rows

    @torch.inference_mode()
    def eval_logits(self, images):
        """(B, ...) rows -> (B, num_classes) float32."""
        self.model.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model.from_cached(self._input(images)).float()

    # --- state: only what learns (the frozen backbone comes from its verified weights file) ---
    def state_dict(self):
        return {"head": self.model.head.state_dict(),
                "tail": self.model.tail.state_dict() if self.cfg.finetune else None,
                "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state):
        self.model.head.load_state_dict(state["head"])
        if state["tail"] is not None:
            self.model.tail.load_state_dict(state["tail"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def startup_note(self):
        what = ("the last stage and the head train (--finetune)" if self.cfg.finetune
                else "frozen: only the head trains, on features computed once")
        return (f"backbone {self.cfg.backbone}: ImageNet weights {self.facts['weights_file']} (sha256 "
                f"{self.facts['weights_sha256'][:12]}... verified); {what}; precision {self.precision}")

    def describe(self):
        return {"recipe": self.name, "arch": self.arch, **self.facts, "finetune": bool(self.cfg.finetune),
                "precision": self.precision, "total_steps": self.total_steps,
                "hyperparameters": self.settings()}
