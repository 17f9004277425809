"""Decode many image files at once, in worker processes, with progress: the policy for one file is preprocess.py's."""

import concurrent.futures
import math
import multiprocessing
from collections.abc import Callable

import numpy as np

from trainjob.errors import DataError
from trainjob.preprocess import UnreadableImage, decode_file
from trainjob.progress import Progress
from trainjob.runtime import cpu_quota

PARALLEL_MIN_FILES = 256  # below this, a process pool costs more than it saves
STALL_S = 300.0  # seconds one chunk of images may take before decoding counts as stalled

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


def decode_all(paths: list[str], size: int, log: Callable[[str], None], workers: int | None = None,
               progress: str = "auto") -> tuple[np.ndarray, dict[int, str]]:
    """Decode every path once -> ((N, 3, size, size) uint8, {index: reason} for unreadable ones, rows zero).

    progress: the --progress mode of the display (its lines go to log)."""
    workers = workers or cpu_quota()
    images = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    failures: dict[int, str] = {}
    chunk = max(16, min(512, math.ceil(len(paths) / (workers * 4)))) if paths else 1
    starts = list(range(0, len(paths), chunk))
    shown = Progress.images(len(paths), "decoding images", log, progress)
    try:
        if len(paths) < PARALLEL_MIN_FILES or workers == 1 or len(starts) == 1:
            for start in starts:
                _store(images, failures, start, decode_chunk(paths[start:start + chunk], size))
                shown.advance(len(paths[start:start + chunk]))
            return images, failures
        _decode_in_processes(paths, size, chunk, min(workers, len(starts)), images, failures, shown)
    finally:
        shown.close()
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
                progress.advance(min(chunk, len(paths) - start))
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
