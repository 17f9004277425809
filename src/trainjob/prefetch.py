"""Work on one chunk while threads load the next ones: feature extraction and batch scoring both decode this way."""

import concurrent.futures
from collections.abc import Callable, Iterator

from trainjob.runtime import cpu_quota


def prefetched(starts: list[int], load: Callable[[int], tuple], ahead: int = 2) -> Iterator[tuple[int, tuple]]:
    """(start, load(start)) in order, with the next chunks loaded by threads while the caller works on this one.

    Threads, not processes: PIL decodes and resizes with the GIL released, torch computes with it released, and a
    thread can neither be OOM-killed alone nor hang a pool; on a stop, queued chunks are dropped at once.
    """
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(ahead, cpu_quota())),
                                                 thread_name_prefix="decode")
    try:
        pending = [(s, pool.submit(load, s)) for s in starts[:ahead]]
        following = iter(starts[ahead:])
        while pending:
            start, future = pending.pop(0)
            nxt = next(following, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load, nxt)))
            yield start, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
