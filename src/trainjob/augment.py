"""Augmentation and resizing of whole uint8 batches, on the device, without per-image Python (airbench's way).

    alternating_flips   which images of a batch to mirror this epoch: each image both ways over two epochs
    augment             per-image random shifts (reflect padding) and those flips, in one gather
    downscale           progressive resizing: a smaller batch for the first epochs
"""

import torch
import torch.nn.functional as F


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


def downscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, h, w), h = round(scale * H) (at least 8, which FastNet still pools to 1x1),
    antialiased bilinear, channels-last."""
    size = [max(8, round(scale * n)) for n in x.shape[2:]]
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).contiguous(
        memory_format=torch.channels_last)
