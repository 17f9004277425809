"""`--recipe fast`: airbench94's training (KellerJordan/cifar10-airbench), fitted to a 2-core CPU.

What it keeps from airbench: the net (models.FastNet: frozen patch-whitening first layer set from the first batch,
BN with learnable biases only, GELU, global max pool), Nesterov SGD with a linear warm-up then decay, decoupled weight
decay, BN biases at 64x the learning rate, label smoothing 0.2, per-image random translation (reflect padding) and
alternating flips done by one gather on the whole batch, Lookahead weight averaging (every 5 steps, strengthening to
the end), and flip test-time augmentation. What it changes for a CPU: 3/4 of airbench's widths and 8 epochs (the CPU
has ~1/500 of an A100's arithmetic), bf16 autocast where the CPU has native bf16 (fp32 otherwise), and full TTA only
at the final evaluation.

Every hyperparameter is in HYP below; the CLI's --learning_rate, --momentum, --epochs, --batch_size, --image_size and
--width override theirs through FastRecipe.defaults.
"""

from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from trainjob.recipes.base import Recipe, normalize


@dataclass(frozen=True)
class Hyperparameters:
    # --- optimisation (the CLI overrides the first five, and --width below) ---
    learning_rate: float = 0.75  # peak Nesterov-SGD lr on the batch-mean loss (airbench's 11.5 / 7.67 per 1024 images)
    momentum: float = 0.85  # Nesterov momentum
    epochs: int = 8  # passes over the training set
    batch_size: int = 512  # images per step per process; scale --learning_rate with it
    image_size: int = 32  # pixels per side
    weight_decay: float = 2.0e-3  # fraction of each weight removed per 1024 images at peak lr; independent of the lr
    bias_lr_scale: float = 64.0  # BatchNorm biases learn this much faster (their decay per step stays the same)
    warmup_fraction: float = 0.23  # of all steps, spent ramping the lr from warmup_start to 1 (x learning_rate)
    warmup_start: float = 0.2  # lr multiplier at step 0
    final_lr: float = 0.07  # lr multiplier at the last step (linear decay after the warm-up)
    label_smoothing: float = 0.2  # share of the target spread over all classes
    whiten_bias_epochs: int = 3  # the whitening layer's bias learns for this many epochs, then stays
    # --- augmentation (whole batches, uint8) ---
    translate: int = 2  # max random shift in pixels per axis, reflect-padded (airbench: 2 at 32x32)
    flip: bool = True  # horizontal flip, airbench's alternating scheme: each image flipped in every other epoch
    # --- weight averaging (Lookahead, as airbench) ---
    lookahead_every: int = 5  # steps between averaging
    lookahead_decay: float = 0.95 ** 5  # weight kept by the average at the last step; ramps up as (t / T)^3
    # --- evaluation ---
    tta_final: int = 2  # test-time augmentation at the last evaluation: 0 none, 1 flip, 2 flip + 1-pixel shifts
    tta_during: int = 0  # ... at earlier evaluations (they only show the trend; the final one is reported)
    eval_during: int = 2000  # test images those earlier evaluations score (all 10,000 of CIFAR-10 cost seconds each)
    # --- net (models.FastNet) ---
    width: int = 48  # channels of the first conv group; the second and third have 4x (airbench: 64, 256, 256)
    # Why 48 and how it trades against epochs and batch size, measured: docs/benchmarks.md (make bench-fast).
    bn_momentum: float = 0.4  # PyTorch convention: running = 0.6 running + 0.4 batch
    bn_eps: float = 1e-12
    logit_scale: float = 1 / 9  # logits multiplier (airbench's scaling_factor)
    whiten_eps: float = 5e-4  # added to eigenvalues before whitening (normalised-pixel units squared)


HYP = Hyperparameters()
CLI_SETTINGS = ("learning_rate", "momentum", "epochs", "batch_size", "image_size", "width")  # flags that override HYP

# CIFAR-10's channel statistics; for other data the whitening layer, set from the data, takes up the difference.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def net_widths(width: int) -> tuple[int, int, int]:
    """Channels of FastNet's three conv groups for --width: airbench's 1 : 4 : 4."""
    return width, 4 * width, 4 * width


def choose_precision(requested: str, device: torch.device) -> str:
    """'bf16' where the hardware does bf16 natively, else 'fp32'; an explicit request is honoured as given.

    CPUs without native bf16 (no AVX512-BF16 / AMX / ARM BF16) emulate it in oneDNN, which is slower than fp32.
    """
    if requested in ("fp32", "bf16"):
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        native = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")
        return "bf16" if any(caps.get(name, False) for name in native) else "fp32"
    return "fp32"


def alternating_flips(indices: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """Which images of a batch to mirror (bool, one per dataset index): airbench's alternating flip.

    Each image has a fixed random side, a hash of its index and the seed; odd epochs show every image the other way.
    Over two epochs each image is seen both ways, where independent coin flips would repeat a side half the time.
    """
    x = (indices.long() ^ (seed * 0x9E3779B1)) & 0xFFFFFFFF
    for multiplier in (0x85EBCA6B, 0xC2B2AE35):  # murmur3's 32-bit finaliser: every input bit moves every output bit
        x = ((x ^ (x >> 16)) * multiplier) & 0xFFFFFFFF
    return ((x ^ (x >> 16)) & 1).bool() ^ bool(epoch % 2)


def augment(images: torch.Tensor, generator: torch.Generator, translate: int, flips: torch.Tensor | None
            ) -> torch.Tensor:
    """Random per-image shift (reflect padding) and the given horizontal flips (bool per image, None: none):
    (B, C, H, W) uint8 -> the same, channels-last.

    One gather for the whole batch: each image gets its own row and column index maps, shifted by its offsets,
    reflected at the border and reversed for flipped images. No padding copy, no per-image Python.
    """
    b, _, h, w = images.shape
    dev = images.device
    shift = torch.randint(-translate, translate + 1, (2, b), generator=generator).to(dev)  # (2, B) pixels
    flips = flips.to(dev) if flips is not None else torch.zeros(b, dtype=torch.bool, device=dev)
    rows = _reflect(torch.arange(h, device=dev) + shift[0, :, None], h)  # (B, H)
    cols = _reflect(torch.arange(w, device=dev) + shift[1, :, None], w)  # (B, W)
    cols = torch.where(flips[:, None], w - 1 - cols, cols)  # a crop of the mirrored image
    batch = torch.arange(b, device=dev)[:, None, None]
    # Advanced indices on dims 0, 2, 3 around a slice: the result is (B, H, W, C), i.e. NCHW channels-last after
    # the permute, the layout the convolutions want.
    return images[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range indices as F.pad(mode='reflect') does: -1 -> 1, size -> size - 2 (shifts < size)."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


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
    defaults = {name: getattr(HYP, name) for name in CLI_SETTINGS}  # HYP is the one source
    bf16 = True
    mean = MEAN
    std = STD
    drop_last = False  # a small last batch is harmless here, and a dataset smaller than one batch still trains
    eval_during = HYP.eval_during

    @classmethod
    def arch_options(cls, cfg):
        return {"widths": list(net_widths(cfg.width)), "bn_momentum": HYP.bn_momentum, "bn_eps": HYP.bn_eps,
                "logit_scale": HYP.logit_scale}

    def __init__(self, cfg, num_classes, image_size, steps_per_epoch, device, wrap=lambda m: m):
        super().__init__(cfg, num_classes, image_size, steps_per_epoch, device, wrap)
        self.precision = choose_precision(cfg.precision, device)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.step = 0  # optimiser steps taken
        self.whitened = False  # the whitening filters are set from the first batch

        lr, decay = cfg.learning_rate, HYP.weight_decay * cfg.batch_size / 1024  # decay per step
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        norm_biases = [p for n, p in named if ".norm" in n]
        whiten_bias = [p for n, p in named if n.startswith("whiten.")]
        others = [p for n, p in named if ".norm" not in n and not n.startswith("whiten.")]
        # SGD multiplies weight_decay by the group's lr: dividing by it makes the decay per step independent of lr.
        self.optimizer = torch.optim.SGD([
            {"params": norm_biases, "lr": lr * HYP.bias_lr_scale, "weight_decay": decay / (lr * HYP.bias_lr_scale)},
            {"params": whiten_bias, "lr": lr, "weight_decay": decay / lr},
            {"params": others, "lr": lr, "weight_decay": decay / lr},
        ], lr=lr, momentum=cfg.momentum, nesterov=True)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # The averaged weights: every float tensor of the state dict (parameters and BN running statistics).
        self.average = self._float_state()

    # --- training ---
    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak lr at a step: linear warm-up, then linear decay to HYP.final_lr."""
        warmup = int(self.total_steps * HYP.warmup_fraction)
        if step < warmup:
            frac = step / warmup
            return HYP.warmup_start * (1 - frac) + frac
        frac = (step - warmup) / max(1, self.total_steps - warmup)
        return (1 - frac) + HYP.final_lr * frac

    def train_step(self, images, labels, generator, indices):
        if not self.whitened:
            self._init_whitening(images)
        factor = self.lr_factor(self.step)
        whiten_on = self.step < HYP.whiten_bias_epochs * self.steps_per_epoch
        scales = (1.0, float(whiten_on), 1.0)  # norm biases, whitening bias, the rest
        if self.train_model is self.model:  # (DDP expects a gradient for every parameter it was given)
            # Once the whitening layer is frozen nothing before the first conv learns, so autograd skips the
            # first conv's input gradient and everything below it: ~8 % of a step. Same weights as lr 0.
            self.model.whiten.bias.requires_grad_(whiten_on)
        for group, base, scale in zip(self.optimizer.param_groups, self.base_lrs, scales, strict=True):
            group["lr"] = base * factor * scale
        flips = alternating_flips(indices, self.step // self.steps_per_epoch, self.cfg.seed) if HYP.flip else None
        inputs = to_input(augment(images, generator, HYP.translate, flips))  # (B, 3, H, W) float32
        self.train_model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.train_model(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=HYP.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        # Lookahead; the last step averages too, so the model trained, evaluated and exported is the average.
        if self.step >= HYP.lookahead_every and (self.step % HYP.lookahead_every == 0 or self.step == self.total_steps):
            self._lookahead(HYP.lookahead_decay * (self.step / self.total_steps) ** 3)
        return loss.detach()

    @torch.no_grad()
    def _init_whitening(self, images: torch.Tensor) -> None:
        """Set the frozen first layer from this batch's patches; under DDP every rank takes rank 0's filters."""
        layer = self.model.whiten
        layer.weight.copy_(whitening_filters(to_input(images), layer.kernel_size[0], HYP.whiten_eps))
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(layer.weight.data, src=0)
        self.average = self._float_state()
        self.whitened = True

    @torch.no_grad()
    def _lookahead(self, decay: float) -> None:
        """average <- decay * average + (1 - decay) * weights; then the weights restart from the average."""
        for name, value in self.model.state_dict().items():
            if name in self.average:
                self.average[name].lerp_(value, 1 - decay)
                value.copy_(self.average[name])

    def _float_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if v.is_floating_point()}

    # --- evaluation ---
    @torch.inference_mode()
    def eval_logits(self, images):
        """(B, 3, H, W) uint8 -> (B, num_classes) float32; flip (+ shift) TTA, full only once training is done."""
        self.model.eval()
        level = HYP.tta_final if self.step >= self.total_steps else HYP.tta_during
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            x = to_input(images)
            logits = self._mirror_logits(x, level >= 1)
            if level >= 2:  # airbench's TTA: also the image shifted one pixel up-left and down-right
                pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
                shifted = (pad[:, :, :-2, :-2], pad[:, :, 2:, 2:])
                logits = 0.5 * logits + 0.25 * sum(self._mirror_logits(s.contiguous(
                    memory_format=torch.channels_last), True) for s in shifted)
        return logits.float()

    def _mirror_logits(self, x: torch.Tensor, mirror: bool) -> torch.Tensor:
        logits = self.model(x).float()
        return 0.5 * (logits + self.model(x.flip(3)).float()) if mirror else logits

    # --- state ---
    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "whitened": self.whitened, "average": {k: v.clone() for k, v in self.average.items()}}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.whitened = int(state["step"]), bool(state["whitened"])
        self.average = {k: v.clone() for k, v in state["average"].items()}

    def startup_note(self):
        if self.precision == "bf16":
            return "precision: bf16 autocast"
        if self.cfg.precision == "auto" and self.device.type == "cpu":
            # Emulated bf16 is many times slower than fp32, and fp32 several times slower than native bf16; Azure's
            # STANDARD_D2_V2 (the tutorial's cpu-cluster) has no native bf16. The figures, and those of the shorter
            # run suggested here: docs/benchmarks.md (make bench-precision, make bench-fast).
            return ("precision: fp32, because this CPU has no native bf16 (AVX512-BF16 or AMX): expect several times "
                    "the training time of a CPU that has it; for a quarter of the time, "
                    "--width 32 --epochs 4 --batch_size 256 --learning_rate 0.375")
        return "precision: fp32"

    def describe(self):
        return {"recipe": self.name, "arch": self.arch, "precision": self.precision, "total_steps": self.total_steps,
                "hyperparameters": {**asdict(HYP), **{k: getattr(self.cfg, k) for k in self.defaults}}}
