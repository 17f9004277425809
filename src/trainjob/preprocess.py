"""Preparing images for a model, the same for training and for inference: image files decoded to (3, S, S) uint8,
and uint8 batches normalised to float.

The decoding policy (use decode_file / image_to_array for both training and prediction):
- orientation: EXIF rotation applied (phone photos are stored sideways);
- size: shorter side resized to S (antialiased bilinear), then the centre S x S cropped: no distortion, edges lost;
- 16-bit (I;16*, I) scaled by 255/65535, not clipped; float (F) taken as 0-1 if its maximum is <= 1, else 0-255;
- transparency (LA, RGBA, P with a transparent colour): composited over black, so hidden colours carry no signal;
- CMYK, YCbCr, palette, 1-bit and greyscale: converted to RGB; animated files: first frame.

This room is the floor that training (recipes/, data/) and inference (predict, score, export) both stand on; it
imports neither.
"""

import errno
import functools
import struct
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# The formats the image extensions name (detect.IMAGE_EXTENSIONS; PIL's JPEG also opens the multi-picture JPEGs
# phones write). PIL picks a decoder by content, not by name: without this list a PostScript file named cat.jpg
# would go to Ghostscript.
DECODABLE_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")
MAX_IMAGE_PIXELS = 64_000_000  # larger images are skipped as possible decompression bombs (PIL's default is ~89 M)

# What PIL raises for a file it cannot decode; anything else is a bug in trainjob and keeps its traceback.
_UNDECODABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError,
                Image.DecompressionBombWarning)


class UnreadableImage(Exception):
    """A file that is skipped; the message is the short reason users see."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(im, dtype=np.float64)  # (H, W) in 0-65535
        return Image.fromarray(np.clip(np.rint(wide * (255 / 65535)), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64))  # (H, W)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return im.convert("RGB")


def image_to_array(im: Image.Image, size: int) -> np.ndarray:
    """An opened PIL image -> (3, size, size) uint8 by the module's policy."""
    im = ImageOps.exif_transpose(im)
    rgb = _to_rgb(im)
    fitted = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    return np.asarray(fitted, dtype=np.uint8).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def _reason(error: BaseException) -> str:
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large (over {MAX_IMAGE_PIXELS // 1_000_000} megapixels, possible decompression bomb)"
    if isinstance(error, UnidentifiedImageError):
        return "not an image (format not recognised)"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, OSError) and error.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(error, (FileNotFoundError, IsADirectoryError)):
        return "vanished or not a file"
    return "corrupt or truncated image"


def decode_file(path: str, size: int) -> np.ndarray:
    """One file -> (3, size, size) uint8; raises UnreadableImage with a short reason."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL warns above this and raises above twice this
    Image.init()  # registers every plugin (PIL loads MPO, TIFF, WebP only on demand); formats= picks which may run
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=DECODABLE_FORMATS) as im:
                im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size (much faster)
                return image_to_array(im, size)
    except _UNDECODABLE as e:
        raise UnreadableImage(_reason(e)) from e



def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32, as torchvision's ToTensor() then Normalize(mean, std) computes it."""
    m, s = _channel_stats(tuple(mean), tuple(std), images.device)
    return images.float().div_(255).sub_(m).div_(s)


@functools.lru_cache(maxsize=8)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """(1, C, 1, 1) float32 mean and std, made once: at batch 4 building them each step costs as much as using them."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))
