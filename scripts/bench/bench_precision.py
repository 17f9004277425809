#!/usr/bin/env python3
"""make bench-precision: time one training step of the fast recipe in fp32 and in bf16 autocast on this CPU.

--precision auto picks bf16 only where the CPU does it natively (AVX512-BF16, AMX); elsewhere oneDNN emulates bf16,
which is slower than fp32. This shows both on the machine at hand, with what auto would pick, on random 512-image
uint8 batches (no data needed). Prints the median of the timed steps, after one warm-up step. Emulated bf16 can take
half a minute a step (AVX2-only CPUs): the default of 3 timed steps keeps the whole run to a few minutes there.
"""

import argparse
import statistics
import time
from argparse import Namespace
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainjob import runtime
from trainjob.config import recipe_defaults
from trainjob.recipes import fast

CPU = torch.device("cpu")


def one_step(precision: str, batch: int, width: int, steps_per_epoch: int) -> Callable[[], object]:
    """FastRecipe.train_step (augmentation, forward, backward, SGD and Muon) on one random batch, as a callable."""
    torch.manual_seed(0)
    cfg = Namespace(**{**recipe_defaults(fast.FastRecipe), "batch_size": batch, "width": width, "precision": precision,
                       "seed": 0})
    recipe = fast.FastRecipe(cfg, 10, cfg.image_size, steps_per_epoch=steps_per_epoch, device=CPU)
    images = torch.randint(0, 256, (batch, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
    labels, indices = torch.randint(0, 10, (batch,)), torch.arange(batch)
    generator = torch.Generator().manual_seed(0)
    return lambda: recipe.train_step(images, labels, generator, indices)


def step_seconds(precision: str, batch: int, width: int, steps: int) -> float:
    """Median seconds of a training step on random images."""
    step = one_step(precision, batch, width, steps + 1)
    times = []
    for _ in range(steps + 1):  # the first also sets the whitening layer: a warm-up, not timed
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def profile(precision: str, batch: int, width: int) -> None:
    """Where a step's time goes: arithmetic rate of the whole step, then the costliest operators by input shape."""
    step = one_step(precision, batch, width, 10)
    step()  # warm-up (whitening)
    with FlopCounterMode(display=False) as flops:
        step()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    print(f"\n{precision} step: {flops.get_total_flops():.3g} FLOP in {seconds:.2f} s = "
          f"{flops.get_total_flops() / seconds / 1e9:.0f} GFLOP/s")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15,
                                                             max_name_column_width=32, max_shapes_column_width=60))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=fast.HYP.batch_size)
    p.add_argument("--width", type=int, default=fast.HYP.width, help="as train's --width")
    p.add_argument("--steps", type=int, default=3, help="timed steps per precision (after one warm-up step)")
    p.add_argument("--profile", action="store_true",
                   help="then profile a step in the precision auto picks: GFLOP/s and the costliest operators")
    args = p.parse_args()
    torch.set_num_threads(runtime.cpu_quota())  # as train does: the container's CPU quota
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; --precision auto picks "
          f"{runtime.choose_precision('auto', CPU)} here")
    print(f"{'widths':>14}{'precision':>11}{'ms/step':>9}{'img/s':>7}")
    widths = fast.net_widths(args.width)
    seconds = {}
    for precision in ("fp32", "bf16"):
        seconds[precision] = step_seconds(precision, args.batch_size, args.width, args.steps)
        print(f"{'/'.join(map(str, widths)):>14}{precision:>11}{seconds[precision] * 1000:9.0f}"
              f"{args.batch_size / seconds[precision]:7.0f}", flush=True)
    print(f"bf16 takes {seconds['bf16'] / seconds['fp32']:.2f}x the time of fp32 per step")
    if args.profile:
        profile(runtime.choose_precision("auto", CPU), args.batch_size, args.width)


if __name__ == "__main__":
    main()
