#!/usr/bin/env python3
"""make bench-precision: time one training step of the fast recipe in fp32 and in bf16 autocast on this CPU.

--precision auto picks bf16 only where the CPU does it natively (AVX512-BF16, AMX); elsewhere oneDNN emulates bf16,
which is slower than fp32. This shows both on the machine at hand, with what auto would pick, on random 1000-image
uint8 batches (no data needed) at full size with the whitening layer frozen, the step most of a run is made of (the
first epochs' steps, on smaller images, cost about 0.6 of it). Prints the median of the timed steps, after one
warm-up step. Emulated bf16 can take half a minute a step (AVX2-only CPUs): the default of 3 timed steps keeps the
whole run to a few minutes there.

--profile then shows where a step's time goes in the precision auto picks: the whole step's GFLOP/s (FLOPs counted
by torch), the convolutions' own GFLOP/s and share of the step, and what oneDNN ran for them (ONEDNN_VERBOSE, read
from the process's own output): the instruction set it found (isa: ... AMX ...), and for each kind of primitive and
implementation (brg_conv_fwd:avx512_core_amx uses AMX tiles, brg_conv_fwd:avx512_core_bf16 the AVX512-BF16 dot
products) its calls, milliseconds and GFLOP/s. --onednn_max_isa AVX512_CORE_BF16 caps what oneDNN may use
(ONEDNN_MAX_CPU_ISA): on an AMX CPU, the same step without AMX tiles.

    make bench-precision ARGS="--profile --batch_size 1000"
    make bench-precision ARGS="--profile --batch_size 1000 --onednn_max_isa AVX512_CORE_BF16"
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainjob import runtime
from trainjob.config import recipe_defaults
from trainjob.recipes import fast

CPU = torch.device("cpu")


def one_step(precision: str, batch: int, width: int, steps_per_epoch: int) -> Callable[[], object]:
    """FastRecipe.train_step (augmentation, forward, backward, SGD and Muon) on one random batch, as a callable:
    a full-size step once the whitening layer is frozen, as a time budget measures it (Recipe.timing_points)."""
    torch.manual_seed(0)
    cfg = Namespace(**{**recipe_defaults(fast.FastRecipe), "batch_size": batch, "width": width, "precision": precision,
                       "seed": 0})
    recipe = fast.FastRecipe(cfg, 10, cfg.image_size, steps_per_epoch=steps_per_epoch, device=CPU)
    recipe.skip_to(recipe.timing_points()["step"])
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
    """Where a step's time goes: arithmetic rate of the whole step and of its convolutions, what oneDNN ran, then
    the costliest operators by input shape."""
    step = one_step(precision, batch, width, 10)
    step()  # warm-up (whitening, oneDNN's kernels built)
    with FlopCounterMode(display=False) as flops:
        step()
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    total = flops.get_total_flops()
    conv = sum(n for op, n in flops.get_flop_counts()["Global"].items() if "convolution" in str(op))
    print(f"\n{precision} step of {batch} images at --width {width}: {total:.3g} FLOP in {seconds:.2f} s = "
          f"{total / seconds / 1e9:.0f} GFLOP/s; convolutions {conv:.3g} FLOP ({conv / total:.0%})")
    info, rows = onednn_rows(step)
    print_onednn(info, rows, seconds)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15,
                                                             max_name_column_width=32, max_shapes_column_width=60))


def onednn_rows(step: Callable[[], object]) -> tuple[list[str], dict]:
    """One step under ONEDNN_VERBOSE: (oneDNN's info lines, {(kind, direction, implementation): [calls, ms,
    FLOP]}). The lines go to the process's stdout from C: captured by pointing file descriptor 1 at a file."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                step()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        captured.seek(0)
        lines = captured.read().decode(errors="replace").splitlines()
    info = [ln.split(",info,", 1)[1] for ln in lines if ",info," in ln and "template:" not in ln]
    rows = defaultdict(lambda: [0, 0.0, 0.0])
    for line in lines:
        fields = line.split(",")
        if len(fields) < 11 or fields[2:4] != ["primitive", "exec"]:
            continue
        kind, implementation, direction, problem, ms = fields[5], fields[6], fields[7], fields[-2], fields[-1]
        row = rows[(kind, direction, implementation)]
        row[0] += 1
        row[1] += float(ms)
        row[2] += primitive_flops(kind, direction, problem)
    return info, dict(rows)


CONV = re.compile(r"mb(\d+)_(?:g(\d+))?ic(\d+)oc(\d+)_ih\d+oh(\d+)kh(\d+)\D.*?_iw\d+ow(\d+)kw(\d+)")


def primitive_flops(kind: str, direction: str, problem: str) -> float:
    """Multiply-adds x 2 of a 2-D convolution (each direction does the forward's) or a matmul, from oneDNN's problem
    descriptor (mb1000_ic48oc192_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1; 1000x576:576x192); 0 for the rest."""
    if kind == "convolution" and (m := CONV.search(problem)):
        mb, groups, ic, oc, oh, kh, ow, kw = (int(v) if v else 1 for v in m.groups())
        return 2.0 * mb * oc * oh * ow * (ic // groups) * kh * kw
    if kind == "matmul" and ":" in problem:
        src, wei = ([int(v) for v in part.split("x")] for part in problem.split(":")[:2])
        batch = 1
        for v in src[:-2]:
            batch *= v
        return 2.0 * batch * src[-2] * src[-1] * wei[-1] if len(src) >= 2 and wei else 0.0
    return 0.0


def print_onednn(info: list[str], rows: dict, step_seconds: float) -> None:
    """oneDNN's ISA and version, the primitives it ran by implementation, and whether any used AMX tiles."""
    for line in info:
        if "isa:" in line or "oneDNN v" in line or "nthr:" in line:
            print(f"oneDNN: {line}")
    if not rows:
        print("oneDNN ran no primitive in this step (its work went elsewhere, e.g. ATen's own kernels)")
        return
    print(f"{'primitive':<12}{'direction':<18}{'implementation':<44}{'calls':>6}{'ms':>9}{'share':>7}{'GFLOP/s':>9}")
    for (kind, direction, implementation), (calls, ms, flop) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        rate = f"{flop / ms / 1e6:.0f}" if flop and ms else "-"
        print(f"{kind:<12}{direction:<18}{implementation:<44}{calls:>6}{ms:9.1f}{ms / 1e3 / step_seconds:7.0%}"
              f"{rate:>9}")
    convs = [(v, impl) for (kind, _, impl), v in rows.items() if kind == "convolution"]
    conv_ms, conv_flop = sum(v[1] for v, _ in convs), sum(v[2] for v, _ in convs)
    amx = sum(v[0] for v, impl in convs if "amx" in impl)
    if conv_ms:
        print(f"convolutions in oneDNN: {conv_flop:.3g} FLOP in {conv_ms / 1e3:.2f} s = "
              f"{conv_flop / conv_ms / 1e6:.0f} GFLOP/s, {conv_ms / 1e3 / step_seconds:.0%} of the step; "
              f"AMX tiles in {amx} of {sum(v[0] for v, _ in convs)} convolution calls")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=fast.HYP.batch_size)
    p.add_argument("--width", type=int, default=fast.HYP.width, help="as train's --width")
    p.add_argument("--steps", type=int, default=3, help="timed steps per precision (after one warm-up step)")
    p.add_argument("--profile", action="store_true",
                   help="then profile a step in the precision auto picks: GFLOP/s, oneDNN's ISA and kernels, and "
                   "the costliest operators")
    p.add_argument("--onednn_max_isa", metavar="ISA", help="cap oneDNN's instruction set (ONEDNN_MAX_CPU_ISA), e.g. "
                   "AVX512_CORE_BF16 on an AMX CPU to measure without AMX tiles")
    args = p.parse_args()
    if args.onednn_max_isa:  # read by oneDNN when it builds its first kernel: nothing has run yet
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.onednn_max_isa
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
