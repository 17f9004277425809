"""How fast a backbone turns images into features on this machine: what a time budget for `--recipe transfer` is
planned from.

`encoder` builds the two steps feature extraction runs per forward pass (features.py): `prepare` (uint8 pixels ->
normalised, channels-last floats) and `encode` (the frozen network under bf16 autocast where the CPU has it: the
whole backbone, or its trunk alone for --finetune, whose last stage then runs at every training step instead).
`extraction_rate` times those two on passes of random pixels of the real size, after one warm-up pass (oneDNN
builds its kernels and reorders the weights there).

It times the network only: decoding runs in threads beside it (prefetch.py) and costs extra where the CPU is
short, which is why a real run's "features: N images in S s" rate is lower (scripts/bench/backbone_rates.py shows
both).
"""

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from trainjob import backbones
from trainjob.features import pass_size
from trainjob.preprocess import normalize
from trainjob.runtime import choose_precision


def encoder(trunk: nn.Module, tail: nn.Module, *, finetune: bool, precision: str, device: torch.device,
            mean=backbones.IMAGENET_MEAN, std=backbones.IMAGENET_STD
            ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(encode, prepare) as --recipe transfer extracts: prepare (B, 3, S, S) uint8 -> normalised float input;
    encode that -> (B, features) pooled, or with finetune the (B, C, S/32, S/32) input of the last stage."""
    net = (trunk if finetune else nn.Sequential(trunk, tail)).to(device).eval()
    net.to(memory_format=torch.channels_last)

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return net(x)

    def prepare(pixels: torch.Tensor) -> torch.Tensor:
        return normalize(pixels.to(device), mean, std).contiguous(memory_format=torch.channels_last)

    return encode, prepare


@torch.inference_mode()
def extraction_rate(backbone: str, image_size: int, *, finetune: bool = False, precision: str = "auto",
                    device: torch.device | None = None, batches: int = 5, parts: tuple | None = None,
                    chunk: int | None = None) -> float:
    """Images per second of feature extraction's network work for this backbone at image_size pixels a side.

    Measured here and now: one warm-up chunk of `chunk` random images, then `batches` timed ones (each ends in
    float16 rows on the CPU, as extraction stores them); the rate of the median one. parts: the (trunk, tail) to
    time, if already built; else a randomly initialised copy (the work does not depend on the weights, and no
    weights file is needed). chunk: images per pass, extraction's own on device (features.pass_size) by default.
    Cost: (batches + 1) passes plus building the network: ~1-2 s on the Zen 4 host."""
    device = device or torch.device("cpu")
    chunk = chunk or pass_size(device)
    trunk, tail = parts if parts is not None else backbones.build_parts(backbone)
    encode, prepare = encoder(trunk, tail, finetune=finetune, precision=choose_precision(precision, device),
                              device=device)
    pixels = torch.randint(0, 256, (chunk, 3, image_size, image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))

    def chunk_seconds() -> float:
        started = time.perf_counter()
        encode(prepare(pixels)).float().to(torch.float16).cpu().numpy()  # ends on the CPU: nothing left queued
        return time.perf_counter() - started

    chunk_seconds()  # warm-up, not timed
    # The median chunk: one chunk slowed by another process starting is not what the extraction will see.
    return chunk / statistics.median(chunk_seconds() for _ in range(max(1, batches)))
