"""Backbone features for `--recipe transfer`: each image decoded and pushed through the frozen backbone once.

Images stream through in chunks, so memory holds one chunk of pixels and the features, never the dataset's pixels
(100,000 photos at 224 px would be 15 GB of uint8; their pooled features in float16 are 0.5 GB). Each chunk's
features are written atomically to the run's checkpoints/ as soon as they exist, so a stopped run (SIGTERM, SIGKILL)
resumes with the chunks already done; a finished extraction is also kept in the cache folder, so a rerun elsewhere
skips it, and a run that needs the same features while another extracts them waits for that one (locks.py). Under
torchrun the ranks take every world_size-th chunk and then share what they computed.

A row is one image's features: (D,) pooled, or the (C, h, w) input of the backbone's last stage for --finetune.
Rows are kept in float16: half the memory, and well inside its range (ReLU6 outputs, normalised activations).
"""

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from trainjob.data import npz_store
from trainjob.data.dataset import Dataset, Split
from trainjob.data.decode import decode_chunk
from trainjob.environment import Distributed
from trainjob.locks import one_maker
from trainjob.prefetch import prefetched
from trainjob.progress import Progress

FEATURE_VERSION = 1  # bump when what a row holds changes, so stored features are never misread
# Images decoded, stored and resumed as one unit (a file in checkpoints/): the work a SIGKILL loses.
CHUNK = 32
# Images per forward pass through the backbone on a CPU, CHUNK / CPU_PASS passes a chunk. Small passes keep a pass's
# activations in the CPU's caches: on 2 cores in bf16 (Zen 4 host), Lite2 encoded 155 images/s in passes of 8
# against 100 in passes of 16 or 32 and 90 in 64 at 224 px, and 285 against 165 (32) at 192 px
# (scripts/bench/backbone_rates.py). A GPU wants the opposite (not measured here): it gets the whole chunk.
CPU_PASS = 8


def pass_size(device: torch.device) -> int:
    """Images per forward pass of extraction on device."""
    return CPU_PASS if device.type == "cpu" else CHUNK


class FeatureStore:
    """Chunks of one extraction (`<output_dir>/checkpoints/features-KEY/`) and its finished copy in the cache."""

    def __init__(self, key: str, chunk_dir: Path, cache_dir: Path | None):
        self.key = key
        self.chunk_dir = chunk_dir / f"features-{key[:16]}"
        self.cached = cache_dir / f"features-{key[:24]}.npz" if cache_dir else None

    def chunk_path(self, index: int) -> Path:
        return self.chunk_dir / f"chunk-{index:06d}.npz"

    def load_chunk(self, index: int) -> dict[str, np.ndarray] | None:
        return npz_store.load(self.chunk_path(index), self.key, _has_rows)

    def save_chunk(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        npz_store.save(self.chunk_path(index), self.key, arrays)  # unlike the cache, a failure here stops the run

    def load_finished(self) -> dict[str, np.ndarray] | None:
        return npz_store.load(self.cached, self.key, _has_rows) if self.cached else None

    def save_finished(self, arrays: dict[str, np.ndarray], log: Callable[[str], None]) -> None:
        if self.cached is not None and npz_store.save_cached(self.cached, self.key, arrays, log, "extracts again"):
            log(f"features cached: {self.cached}")


def _has_rows(arrays: dict[str, np.ndarray]) -> bool:
    return "rows" in arrays


class FeatureExtractor:
    """Turns images into rows of backbone features; `encode` maps a normalised (B, 3, S, S) batch to (B, ...)."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], prepare: Callable[[torch.Tensor], torch.Tensor],
                 *, image_size: int, settings: str, chunk_dir: Path, cache_dir: Path | None,
                 d: Distributed, log: Callable[[str], None], progress: str = "auto", pass_images: int = CPU_PASS):
        """progress: the --progress mode of the extraction display (shown by the main rank only); pass_images: images
        per forward pass (pass_size)."""
        self.encode, self.prepare = encode, prepare  # prepare: (B, 3, S, S) uint8 -> the backbone's float input
        self.pass_images = pass_images
        self.image_size, self.settings, self.progress = image_size, settings, progress
        self.chunk_dir, self.cache_dir, self.d, self.log = chunk_dir, cache_dir, d, log
        self.store: FeatureStore | None = None  # of the last extraction

    # --- the two sources: image files (streamed from disk) and pixels already in memory (CIFAR, --demo) ---
    def for_files(self, paths: list[str], identity: str) -> tuple[np.ndarray, dict[int, str]]:
        """(N, ...) float16 rows for image files (zero rows where unreadable) and {index: reason}."""
        def chunk_pixels(indices: range):
            pixels, failures = decode_chunk([paths[i] for i in indices], self.image_size)
            return torch.from_numpy(pixels), dict(failures)

        return self._extract(len(paths), identity, chunk_pixels)

    def for_dataset(self, dataset: Dataset) -> Dataset:
        """The dataset with each split's pixels replaced by feature rows (pixels resized per chunk)."""
        from trainjob.data.cifar import resize_images

        def rows(split: Split, name: str) -> torch.Tensor:
            def chunk_pixels(indices: range):
                pixels = split.inputs[indices.start:indices.stop]
                if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
                    pixels = resize_images(pixels, self.image_size)
                return pixels, {}

            digest = hashlib.sha256(split.inputs.numpy().tobytes()).hexdigest()  # ~0.4 s for CIFAR-10's 60,000
            found, _ = self._extract(len(split), f"{dataset.source}\0{name}\0{digest}", chunk_pixels)
            return torch.from_numpy(found)

        return Dataset(train=Split(rows(dataset.train, "train"), dataset.train.labels),
                       test=Split(rows(dataset.test, "test"), dataset.test.labels), classes=dataset.classes,
                       format=dataset.format, source=dataset.source, test_split=dataset.test_split,
                       synthetic=dataset.synthetic, skipped=dataset.skipped, cache=dataset.cache,
                       input_size=(self.image_size, self.image_size))

    # --- the work ---
    def _extract(self, n: int, identity: str, chunk_pixels) -> tuple[np.ndarray, dict[int, str]]:
        key = hashlib.sha256(f"features v{FEATURE_VERSION}\0{self.settings}\0{n}\0{identity}".encode()).hexdigest()
        store = self.store = FeatureStore(key, self.chunk_dir, self.cache_dir)
        finished = self._finished(store, n)
        if finished is not None:
            return finished
        if store.cached is None or self.d.enabled:  # under torchrun rank 0 alone could not make the others wait
            return self._extract_all(store, n, chunk_pixels)
        with one_maker(store.cached, f"features: another run is extracting the same features into {store.cached}; "
                       "waiting for it", self.log):
            finished = self._finished(store, n)  # what the run we waited for wrote
            return finished if finished is not None else self._extract_all(store, n, chunk_pixels)

    def _extract_all(self, store: FeatureStore, n: int, chunk_pixels) -> tuple[np.ndarray, dict[int, str]]:
        """Every chunk: those this run's checkpoints/ already hold are read back, the others computed."""
        mine = [s for i, s in enumerate(range(0, n, CHUNK)) if i % self.d.world_size == self.d.rank]
        found = _Found(n)
        todo = [start for start in mine if not found.add_stored(start, store.load_chunk(start // CHUNK))]
        if len(todo) < len(mine):
            self.log(f"features: {len(mine) - len(todo)} of {len(mine)} chunks already extracted in "
                     f"{store.chunk_dir}; extracting the other {len(todo)}")
        else:
            self.log(f"features: extracting {n} images at {self.image_size}x{self.image_size} in chunks of {CHUNK} "
                     f"({self.settings.split(chr(0))[0]}; kept in {store.chunk_dir})")
        self._compute(store, n, mine, todo, chunk_pixels, found)
        rows, failures = _all_ranks(found) if self.d.enabled else (found.rows, found.failures)
        if rows is None:  # no images at all: the caller says what is missing
            rows = np.zeros((0,), dtype=np.float16)
        if self.d.is_main:
            store.save_finished(_stored_form(rows, failures), self.log)
        return rows, failures

    def _finished(self, store: FeatureStore, n: int) -> tuple[np.ndarray, dict[int, str]] | None:
        """The cached whole extraction, if any; under torchrun rank 0 looks and sends what it found to every rank."""
        arrays = store.load_finished() if self.d.is_main else None
        found = (arrays["rows"], _failures(arrays)) if arrays is not None else None
        if self.d.enabled:
            shared = [found]
            dist.broadcast_object_list(shared, src=0)
            found = shared[0]
        if found is not None:
            self.log(f"features: cache hit {store.cached} ({n} images; extraction skipped)")
        return found

    def _compute(self, store: FeatureStore, n: int, mine: list[int], todo: list[int], chunk_pixels,
                 found: "_Found") -> None:
        size = {start: min(CHUNK, n - start) for start in mine}
        progress = Progress.images(sum(size.values()), "extracting features", self.log, self.progress,
                                   enabled=self.d.is_main, done=sum(size[s] for s in mine) - sum(size[s] for s in todo))
        started = time.monotonic()
        for start, (pixels, failures) in prefetched(todo, lambda s: chunk_pixels(range(s, s + size[s]))):
            rows = self._encode(pixels)
            store.save_chunk(start // CHUNK, _stored_form(rows, failures))  # before anything else can stop us
            found.add(start, rows, failures)
            progress.advance(len(rows))
        progress.close()
        if todo:
            seconds, images = time.monotonic() - started, sum(size[s] for s in todo)
            self.log(f"features: {images} images in {seconds:.1f} s ({images / max(seconds, 1e-9):.0f} images/s)")

    @torch.inference_mode()
    def _encode(self, pixels: torch.Tensor) -> np.ndarray:
        """(k, 3, S, S) uint8 -> (k, ...) float16, pass_images a forward pass."""
        return np.concatenate([self.encode(self.prepare(part)).float().to(torch.float16).cpu().numpy()
                               for part in pixels.split(self.pass_images)])


class _Found:
    """The rows of one extraction as chunks arrive (zero rows for chunks another rank computes), and the failures."""

    def __init__(self, n: int):
        self.n = n
        self.rows: np.ndarray | None = None  # allocated with the first chunk, whose shape it takes
        self.failures: dict[int, str] = {}

    def add(self, start: int, rows: np.ndarray, failures: dict[int, str]) -> None:
        if self.rows is None:
            self.rows = np.zeros((self.n, *rows.shape[1:]), dtype=np.float16)
        self.rows[start:start + len(rows)] = rows
        self.failures.update({start + i: reason for i, reason in failures.items()})

    def add_stored(self, start: int, arrays: dict[str, np.ndarray] | None) -> bool:
        if arrays is None:
            return False
        self.add(start, arrays["rows"], _failures(arrays))
        return True


def _stored_form(rows: np.ndarray, failures: dict[int, str]) -> dict[str, np.ndarray]:
    failed = np.array(sorted(failures), dtype=np.int64)
    return {"rows": rows, "failed": failed, "reasons": np.array([failures[i] for i in failed], dtype=str)}


def _failures(arrays: dict[str, np.ndarray]) -> dict[int, str]:
    return {int(i): str(r) for i, r in zip(arrays["failed"], arrays["reasons"], strict=True)}


def _all_ranks(found: _Found) -> tuple[np.ndarray, dict[int, str]]:
    """Every rank filled its own chunks (zeros elsewhere): a sum gives every rank all of them."""
    shapes = [None] * dist.get_world_size()
    dist.all_gather_object(shapes, None if found.rows is None else found.rows.shape)
    shape = next(s for s in shapes if s is not None)
    total = torch.from_numpy(found.rows.astype(np.float32)) if found.rows is not None else torch.zeros(shape)
    dist.all_reduce(total)  # in float32: gloo's half-precision sum is not in every build
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, found.failures)
    return total.to(torch.float16).numpy(), {i: r for part in gathered for i, r in part.items()}
