"""`--recipe fast`: airbench94's training (KellerJordan/cifar10-airbench), fitted to a 2-core CPU.

What it keeps from airbench94_muon: the net (models.FastNet: frozen patch-whitening first layer set from the first
batch, BN with learnable biases only, GELU, global max pool, logits divided by the last width), Muon for the conv
filters (their momentum orthogonalised by a Newton-Schulz iteration, each filter tensor held at a fixed norm), Nesterov
SGD for the BN biases, the whitening bias and the head, a linear decay of every lr to zero, label smoothing 0.2,
per-image random translation (reflect padding) and alternating flips done by one gather on the whole batch, and flip
+ shift test-time augmentation at the end. Muon reaches airbench's 94 % in 8 epochs where its SGD + Lookahead
predecessor took 9.9. What it changes for a CPU: 3/4 of airbench's widths (the CPU has ~1/500 of an A100's
arithmetic), batches of 1000 (512 and 2000 run slower per image on two cores), the first 3 epochs on images
downscaled to 3/4 (progressive resizing: 0.55x the arithmetic, and a better model at epoch 4 than full-size epochs
gave), bf16 autocast where the CPU has native bf16 (fp32 otherwise), and full TTA only at the final evaluation.

Every hyperparameter is in HYP below; the flags config.recipe_settings("fast") names (--learning_rate, --momentum,
--epochs, --batch_size, --image_size, --width) override theirs.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainjob.augment import alternating_flips, augment, downscale
from trainjob.inference import tta_logits
from trainjob.optim import Muon
from trainjob.preprocess import normalize
from trainjob.recipes.base import Recipe
from trainjob.runtime import choose_precision


@dataclass(frozen=True)
class Hyperparameters:
    # --- optimisation (the CLI overrides the first five, and --width below) ---
    learning_rate: float = 0.17  # Muon's step for the conv filters, each held at norm sqrt(out channels)
    momentum: float = 0.6  # Muon's Nesterov momentum
    epochs: int = 8  # passes over the training set
    batch_size: int = 1000  # images per step per process; Muon's step is per batch: scale --learning_rate by
    # about the square root of a change (airbench94_muon: 0.24 at 2000; measured here: 0.12 and 0.24 worse at 1000)
    image_size: int = 32  # pixels per side
    bias_lr: float = 0.053  # SGD lr per image (of the summed loss) for the BN biases and the whitening bias
    head_lr: float = 0.67  # ... for the linear head
    sgd_momentum: float = 0.85  # Nesterov momentum of those SGD groups
    weight_decay: float = 2e-6  # fraction of each SGD-trained weight removed per image per unit lr multiplier
    newton_schulz_steps: int = 3  # iterations orthogonalising Muon's update (airbench94_muon: 3)
    label_smoothing: float = 0.2  # share of the target spread over all classes
    whiten_bias_epochs: int = 3  # the whitening layer's bias learns for this many epochs (its lr decaying to 0)
    # --- augmentation (whole batches, uint8) ---
    translate: int = 2  # max random shift in pixels per axis, reflect-padded (airbench: 2 at 32x32)
    flip: bool = True  # horizontal flip, airbench's alternating scheme: each image flipped in every other epoch
    # --- progressive resizing: the first epochs see smaller images, at about half the arithmetic per image ---
    small_epochs: int = 3  # epochs trained on images downscaled to small_scale of --image_size (never the last)
    small_scale: float = 0.75  # 32 -> 24 pixels
    # --- evaluation ---
    tta_final: int = 2  # test-time augmentation at the last evaluation: 0 none, 1 flip, 2 flip + 1-pixel shifts
    tta_during: int = 0  # ... at earlier evaluations (they only show the trend; the final one is reported)
    eval_during: int = 2000  # test images those earlier evaluations score (all 10,000 of CIFAR-10 cost seconds each)
    # --- net (models.FastNet) ---
    width: int = 48  # channels of the first conv group; the second and third have 4x (airbench: 64, 256, 256)
    # Why 48 and how it trades against epochs, batch size and lr, measured: docs/benchmarks.md (make bench-fast).
    bn_momentum: float = 0.4  # PyTorch convention: running = 0.6 running + 0.4 batch
    bn_eps: float = 1e-12
    whiten_eps: float = 5e-4  # added to eigenvalues before whitening (normalised-pixel units squared)


HYP = Hyperparameters()

# CIFAR-10's channel statistics; for other data the whitening layer, set from the data, takes up the difference.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def net_widths(width: int) -> tuple[int, int, int]:
    """Channels of FastNet's three conv groups for --width: airbench's 1 : 4 : 4."""
    return width, 4 * width, 4 * width


def to_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 normalised, channels-last."""
    return normalize(images, MEAN, STD).contiguous(memory_format=torch.channels_last)


def whitening_filters(x: torch.Tensor, kernel: int, eps: float) -> torch.Tensor:
    """ZCA-style filters from the k x k patch covariance of x (B, 3, H, W): (2 * 3k^2, 3, k, k), each eigenvector
    scaled by 1 / sqrt(eigenvalue) and its negation (so GELU passes both signs)."""
    c = x.shape[1]
    patches = x.float().unfold(2, kernel, 1).unfold(3, kernel, 1)  # (B, C, H', W', k, k)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel).double()  # (N, C k k)
    cov = patches.T @ patches / patches.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first, one per row
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).view(-1, c, kernel, kernel)
    return torch.cat([filters, -filters]).float()


class FastRecipe(Recipe):
    name = "fast"
    arch = "fastnet"
    hyperparameters = HYP
    bf16 = True
    mean = MEAN
    std = STD
    drop_last = False  # a small last batch is harmless here, and a dataset smaller than one batch still trains
    eval_during = HYP.eval_during

    @classmethod
    def arch_options(cls, cfg):
        return {"widths": list(net_widths(cfg.width)), "bn_momentum": HYP.bn_momentum, "bn_eps": HYP.bn_eps,
                "logit_scale": 1 / net_widths(cfg.width)[-1]}  # the head's init has std 1 (see __init__)

    def __init__(self, cfg, num_classes, image_size, steps_per_epoch, device, wrap=lambda m: m, plan=None):
        super().__init__(cfg, num_classes, image_size, steps_per_epoch, device, wrap, plan)
        self.precision = choose_precision(cfg.precision, device)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.step = 0  # optimiser steps taken
        # The last epoch always sees full-size images: the model is scored and used at that size. A time budget
        # chooses how many come before it (budget.plan_fast), and the final evaluation's TTA.
        small = min(HYP.small_epochs, cfg.epochs - 1) if plan is None else plan.small_epochs
        self.small_steps = small * self.steps_per_epoch
        self.tta_final = HYP.tta_final if plan is None or plan.tta_final is None else plan.tta_final
        self.whiten_steps = HYP.whiten_bias_epochs * self.steps_per_epoch  # the whitening bias learns, then stays
        self.whitened = False  # the whitening filters are set from the first batch

        # The SGD groups' lrs are per image of a summed loss (airbench94_muon's), on the mean loss here: x batch size.
        per_batch, decay = cfg.batch_size, HYP.weight_decay * cfg.batch_size  # decay per step
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        filters = [p for n, p in named if p.ndim == 4]
        norm_biases = [p for n, p in named if ".norm" in n]
        whiten_bias = [self.model.whiten.bias]
        head = [self.model.head.weight]
        with torch.no_grad():
            head[0].mul_(1 / head[0].std())  # airbench94_muon's: logits then divide by the last width
        # SGD multiplies weight_decay by the group's lr: dividing by it makes the decay per step independent of lr.
        sgd_groups = [(norm_biases, HYP.bias_lr), (whiten_bias, HYP.bias_lr), (head, HYP.head_lr)]
        self.sgd = torch.optim.SGD([
            {"params": params, "lr": lr * per_batch, "weight_decay": decay / (lr * per_batch)}
            for params, lr in sgd_groups], momentum=HYP.sgd_momentum, nesterov=True)
        self.muon = Muon(filters, lr=cfg.learning_rate, momentum=cfg.momentum, steps=HYP.newton_schulz_steps,
                         dtype=torch.bfloat16 if self.precision == "bf16" else torch.float32)
        self.optimizers = (self.sgd, self.muon)
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers]

    # --- training ---
    def lr_factor(self, step: int) -> float:
        """Multiplier of every peak lr at a step: a linear decay to zero (the whitening bias's: lr_factor_whiten)."""
        return 1 - step / self.total_steps

    def lr_factor_whiten(self, step: int) -> float:
        return max(0.0, 1 - step / self.whiten_steps)

    def timing_points(self):
        # The two kinds of step most runs are made of: the first ones, on smaller images while the whitening bias
        # learns, and full-size ones once the whitening layer is frozen (about 8 % cheaper: see train_step).
        full = max(self.small_steps, self.whiten_steps)
        return {"small_step": 0, "step": full} if self.small_steps else {"step": full}

    def skip_to(self, step):
        self.step = step

    def train_step(self, images, labels, generator, indices):
        if not self.whitened:
            self._init_whitening(images)
        factor = self.lr_factor(self.step)
        whiten_on = self.step < self.whiten_steps
        if self.train_model is self.model:  # (DDP expects a gradient for every parameter it was given)
            # Once the whitening layer is frozen nothing before the first conv learns, so autograd skips the
            # first conv's input gradient and everything below it: ~8 % of a step. Same weights as lr 0.
            self.model.whiten.bias.requires_grad_(whiten_on)
        factors = ((factor, self.lr_factor_whiten(self.step), factor), (factor,))  # sgd: norm, whiten, head; muon
        for opt, bases, scales in zip(self.optimizers, self.base_lrs, factors, strict=True):
            for group, base, scale in zip(opt.param_groups, bases, scales, strict=True):
                group["lr"] = base * scale
        flips = alternating_flips(indices, self.step // self.steps_per_epoch, self.cfg.seed) if HYP.flip else None
        inputs = to_input(augment(images, generator, HYP.translate, flips))  # (B, 3, H, W) float32
        if self.step < self.small_steps:
            inputs = downscale(inputs, HYP.small_scale)
        self.train_model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.train_model(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=HYP.label_smoothing)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self.optimizers:
            opt.step()
        self.step += 1
        return loss.detach()

    @torch.no_grad()
    def _init_whitening(self, images: torch.Tensor) -> None:
        """Set the frozen first layer from this batch's patches; under DDP every rank takes rank 0's filters."""
        layer = self.model.whiten
        layer.weight.copy_(whitening_filters(to_input(images), layer.kernel_size[0], HYP.whiten_eps))
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(layer.weight.data, src=0)
        self.whitened = True

    # --- evaluation ---
    @torch.inference_mode()
    def eval_logits(self, images):
        """(B, 3, H, W) uint8 -> (B, num_classes) float32; flip (+ shift) TTA, full only once training is done."""
        self.model.eval()
        level = self.tta_final if self.step >= self.total_steps else HYP.tta_during
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return tta_logits(self.model, to_input(images), level).float()

    def export(self):
        return {**super().export(), "tta": self.tta_final}  # predict and export score as the final evaluation did

    # --- state ---
    def state_dict(self):
        return {"model": self.model.state_dict(), "sgd": self.sgd.state_dict(), "muon": self.muon.state_dict(),
                "step": self.step, "whitened": self.whitened}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.sgd.load_state_dict(state["sgd"])
        self.muon.load_state_dict(state["muon"])
        self.step, self.whitened = int(state["step"]), bool(state["whitened"])

    def startup_note(self):
        if self.precision == "bf16":
            return "precision: bf16 autocast"
        if self.cfg.precision == "auto" and self.device.type == "cpu":
            # Emulated bf16 is many times slower than fp32, and fp32 several times slower than native bf16; Azure's
            # STANDARD_D2_V2 (the tutorial's cpu-cluster) has no native bf16. The figures, and those of the shorter
            # run suggested here: docs/benchmarks.md (make bench-precision, make bench-fast).
            return ("precision: fp32, because this CPU has no native bf16 (AVX512-BF16 or AMX): expect several times "
                    "the training time of a CPU that has it; for a quarter of the time, --width 32 --epochs 4")
        return "precision: fp32"

    def describe(self):
        return {"recipe": self.name, "arch": self.arch, "precision": self.precision, "total_steps": self.total_steps,
                "small_epochs": self.small_steps // self.steps_per_epoch, "tta_final": self.tta_final,
                "hyperparameters": self.settings()}
