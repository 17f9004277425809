"""Score image files chunk by chunk: threads decode the next chunks while the model scores this one, so memory holds
a few chunks of pixels whatever the number of files, and the rows of each chunk can be written before the next."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from trainjob.batch.inputs import row_path
from trainjob.batch.predictions import Row
from trainjob.data.decode import decode_chunk
from trainjob.inference import Classifier
from trainjob.prefetch import prefetched

# Images per forward pass. 16, measured on the Zen 4 host (2 cores) with make bench-predict's bare forward on a
# transfer model at 256 px: onnxruntime 215 images/s and 1.12 GB peak RSS against 172 and 1.46 GB at 32 (179 and
# 0.94 GB at 8); PyTorch bf16 92 against 76 at 32, and the fast recipe's net 527 against 481.
CHUNK = 16


@dataclass
class Scored:
    """One chunk of files: paths[start:start + count], their probabilities, and the ones that could not be read."""

    start: int
    count: int
    probabilities: dict[int, np.ndarray]  # index in paths -> (classes,) float32
    failures: dict[int, str]  # index in paths -> the reason it was skipped


def score_files(classifier: Classifier, paths: list[str], *, chunk: int = CHUNK,
                stop: Callable[[], bool] = lambda: False) -> Iterator[Scored]:
    """Scored chunks in order; stops early (between chunks) once stop() is true."""
    size = classifier.image_size

    def load(start: int):
        return decode_chunk(paths[start:start + chunk], size)  # ((k, 3, S, S) uint8, [(i, reason)])

    for start, (pixels, failed) in prefetched(list(range(0, len(paths), chunk)), load):
        failures = {start + i: reason for i, reason in failed}
        keep = [i for i in range(len(pixels)) if start + i not in failures]
        chosen = pixels if len(keep) == len(pixels) else pixels[keep]
        probs = classifier.probabilities(torch.from_numpy(chosen)).numpy() if keep else np.zeros((0, 0))
        yield Scored(start, len(pixels), {start + i: p for i, p in zip(keep, probs, strict=True)}, failures)
        if stop():
            return


def score_pixels(classifier: Classifier, pixels: np.ndarray, *, chunk: int = CHUNK,
                 stop: Callable[[], bool] = lambda: False) -> Iterator[Scored]:
    """The same for images already in memory (N, 3, h, w) uint8 (CIFAR), resized per chunk as training resizes."""
    from trainjob.data.cifar import resize_images

    for start in range(0, len(pixels), chunk):
        batch = torch.from_numpy(pixels[start:start + chunk])
        if batch.shape[-1] != classifier.image_size or batch.shape[-2] != classifier.image_size:
            batch = resize_images(batch, classifier.image_size)
        probs = classifier.probabilities(batch).numpy()
        yield Scored(start, len(batch), {start + i: p for i, p in enumerate(probs)}, {})
        if stop():
            return


def scored_rows(scored: Scored, paths: list[str], classes: list[str], top: int) -> list[Row]:
    """A scored chunk of paths as rows, in order: the top classes of each file, or why it could not be read."""
    return [Row(row_path(paths[i]), top_classes(scored.probabilities[i], classes, top)) if i in scored.probabilities
            else Row(row_path(paths[i]), None, scored.failures[i])
            for i in range(scored.start, scored.start + scored.count)]


def top_classes(probs: np.ndarray, classes: list[str], top: int) -> list[tuple[str, float]]:
    """(classes,) probabilities -> the `top` (class, probability) pairs, best first (ties: the lower index)."""
    order = np.argsort(-probs, kind="stable")[:top]
    return [(classes[i], float(probs[i])) for i in order]
