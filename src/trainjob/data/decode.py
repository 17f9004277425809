"""Decode image files into (3, S, S) uint8 arrays: any mode and size in, RGB at S x S out, bad files named.

Policy (the same for training and for prediction, so use image_to_array for both):
- orientation: EXIF rotation applied (phone photos are stored sideways);
- size: shorter side resized to S (antialiased bilinear), then the centre S x S cropped: no distortion, edges lost;
- 16-bit (I;16*, I) scaled by 255/65535, not clipped; float (F) taken as 0-1 if its maximum is <= 1, else 0-255;
- transparency (LA, RGBA, P with a transparent colour): composited over black, so hidden colours carry no signal;
- CMYK, YCbCr, palette, 1-bit and greyscale: converted to RGB; animated files: first frame.
"""

import concurrent.futures
import errno
import math
import multiprocessing
import struct
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from trainjob.errors import DataError
from trainjob.runtime import cpu_quota
from trainjob.watchdog import beat

# The formats the image extensions name (detect.IMAGE_EXTENSIONS; PIL's JPEG also opens the multi-picture JPEGs
# phones write). PIL picks a decoder by content, not by name: without this list a PostScript file named cat.jpg
# would go to Ghostscript.
DECODABLE_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")
MAX_IMAGE_PIXELS = 64_000_000  # larger images are skipped as possible decompression bombs (PIL's default is ~89 M)
PARALLEL_MIN_FILES = 256  # below this, a process pool costs more than it saves
PROGRESS_EVERY_S = 5.0  # seconds between progress lines when stderr is not a terminal
STALL_S = 300.0  # seconds one chunk of images may take before decoding counts as stalled

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


def decode_chunk(paths: list[str], size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Worker: decode paths -> ((k, 3, size, size) uint8 with zeros where unreadable, [(index in chunk, reason)])."""
    out = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    failures = []
    for i, path in enumerate(paths):
        try:
            out[i] = decode_file(path, size)
        except UnreadableImage as e:
            failures.append((i, str(e)))
    return out, failures


class Progress:
    """A tqdm bar on a terminal, else a log line every few seconds (container logs have no terminal)."""

    def __init__(self, total: int, log: Callable[[str], None], what: str = "decoding images"):
        self.total, self.done, self.log, self.what = total, 0, log, what
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit="img", file=sys.stderr)

    def update(self, n: int) -> None:
        beat(self.what)
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S and self.done < self.total:
            rate = self.done / (now - self.start)
            self.log(f"{self.what}: {self.done}/{self.total} ({rate:.0f}/s, "
                     f"about {(self.total - self.done) / max(rate, 1e-9):.0f} s left)")
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def decode_all(paths: list[str], size: int, log: Callable[[str], None],
               workers: int | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """Decode every path once -> ((N, 3, size, size) uint8, {index: reason} for unreadable ones, rows zero)."""
    workers = workers or cpu_quota()
    images = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    failures: dict[int, str] = {}
    chunk = max(16, min(512, math.ceil(len(paths) / (workers * 4)))) if paths else 1
    starts = list(range(0, len(paths), chunk))
    progress = Progress(len(paths), log)
    try:
        if len(paths) < PARALLEL_MIN_FILES or workers == 1 or len(starts) == 1:
            for start in starts:
                _store(images, failures, start, decode_chunk(paths[start:start + chunk], size))
                progress.update(len(paths[start:start + chunk]))
            return images, failures
        _decode_in_processes(paths, size, chunk, min(workers, len(starts)), images, failures, progress)
    finally:
        progress.close()
    return images, failures


def _decode_in_processes(paths: list[str], size: int, chunk: int, workers: int, images: np.ndarray,
                         failures: dict[int, str], progress: Progress) -> None:
    """decode_all's parallel half: chunks in worker processes; a dead or stalled worker is a one-line DataError."""
    # fork: workers inherit the imported modules instantly (spawn would re-import torch in each)
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    try:
        futures = {pool.submit(decode_chunk, paths[s:s + chunk], size): s for s in range(0, len(paths), chunk)}
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=STALL_S,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            if not done:
                raise DataError(f"decoding images made no progress for {STALL_S:.0f} s; look for a file that hangs "
                                "its decoder, or a stalled network mount")
            for future in done:
                start = futures[future]
                _store(images, failures, start, future.result())
                progress.update(min(chunk, len(paths) - start))
    except concurrent.futures.process.BrokenProcessPool:
        raise DataError("an image decoding process died (killed for memory, or crashed in an image library) while "
                        "decoding; look for an unusually large or damaged file among the images, or give the "
                        "container more memory") from None
    finally:
        _stop_now(pool)


def _stop_now(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Drop queued chunks and end the workers at once: leaving `with pool:` would wait for every queued chunk, tens
    of seconds past a SIGTERM (Docker kills at 10 s). Python 3.14 has pool.terminate_workers() for this."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.kill()
            process.join(timeout=1)


def _store(images: np.ndarray, failures: dict[int, str], start: int, result) -> None:
    decoded, chunk_failures = result
    images[start:start + len(decoded)] = decoded
    failures.update({start + i: reason for i, reason in chunk_failures})
