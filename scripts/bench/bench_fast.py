#!/usr/bin/env python3
"""make bench-fast: train `--recipe fast` on the real CIFAR-10 with the real CLI and report what it achieved.

The data come from ../shared/datasets (converted once, untimed, to the tutorial's cifar-10-batches-py layout in a
cache folder outside the repo) unless --data_path is given. The run's wall time counts from process start to exit:
imports, data loading, every evaluation and the files written at the end. Prints the wall time, the final test
accuracy, when the test accuracy first reached the tutorial recipe's 52 %, images per second, the host (which CPU,
which native bf16) and the load average (this machine is often shared: read the figures with it).

    make bench-fast                                      the defaults, seed 0
    make bench-fast ARGS="--time_budget 600 --seeds 0,1,2"   to a budget: the plan, wall against budget, the mean
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench.shared_data import cifar_batches  # noqa: E402

TUTORIAL_ACCURACY = 0.52  # the tutorial recipe with its defaults on this data (platform-facts.md)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "amx_tile")  # the CPU flags --precision auto takes bf16 from


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (none where it cannot be read)."""
    try:
        return set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                        if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def host_name(flags: set[str], model: str) -> str:
    """Which of the hosts docs/benchmarks.md names this is."""
    return ("AMX host" if "amx_tile" in flags else "Zen 4 host" if "avx512_bf16" in flags and "AMD" in model
            else "AVX2 host" if "avx2" in flags and "avx512f" not in flags else "other host")


def host() -> str:
    """Which of the hosts docs/benchmarks.md names this is, its CPU and its native bf16 flags."""
    flags, model = cpu_flags(), cpu_model()
    native = [f for f in NATIVE_BF16 if f in flags]
    return f"{host_name(flags, model)}: {model}, {os.cpu_count()} CPUs, native bf16: {', '.join(native) or 'none'}"


def train_command() -> list[str]:
    script = Path(sys.executable).parent / "train"  # the console script of the venv running this benchmark
    return [str(script)] if script.is_file() else [sys.executable, "-m", "trainjob"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, help="passes over the training set (default: the fast recipe's)")
    p.add_argument("--time_budget", type=float, metavar="SECONDS",
                   help="train's --time_budget: the run plans its epochs to end within it (not with --epochs)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one run each, then their mean (0,1,2)")
    p.add_argument("--data_path", help="a dataset folder (default: the shared CIFAR-10, converted once)")
    p.add_argument("--keep", action="store_true", help="keep the output folders (model.pt, metrics, log)")
    p.add_argument("train_args", nargs="*", help="more flags for train after --, e.g. -- --precision fp32")
    args = p.parse_args()
    data = Path(args.data_path) if args.data_path else cifar_batches()
    work = Path(tempfile.mkdtemp(prefix="trainjob-bench-fast-"))
    load_before = uptime()
    print(f"{load_before}\n{host()}", flush=True)
    extra = [*(["--epochs", str(args.epochs)] if args.epochs else []),
             *(["--time_budget", f"{args.time_budget:g}"] if args.time_budget else []), *args.train_args]
    runs = [run(data, work / f"seed{seed}", ["--seed", seed, *extra]) for seed in args.seeds.split(",")]
    if len(runs) > 1:
        accuracies = ", ".join(f"{r['test_accuracy']:.2%}" for r in runs)
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
        print(f"\nmean test accuracy {statistics.mean(r['test_accuracy'] for r in runs):.2%} over seeds "
              f"{args.seeds} ({accuracies}); wall {walls} s")
    print(f"host               {host()}")
    finish(work, args.keep, load_before)


def run(data: Path, work: Path, flags: list[str]) -> dict:
    """One run of the real CLI, its log echoed and kept; returns its summary with the wall time added."""
    out = work / "outputs"
    work.mkdir(parents=True)
    cmd = [*train_command(), "--recipe", "fast", "--data_path", str(data), "--output_dir", str(out),
           "--resume", "never", "--progress", "lines", *flags]
    print(f"$ {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    with open(work / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # echo the run as it goes, and keep it
            print(line, end="", flush=True)
            log.write(line)
        returncode = proc.wait()
    wall = time.perf_counter() - started
    if returncode != 0:
        sys.exit(f"error: train failed with exit {returncode}; its log: {work / 'train.log'}")
    summary = json.loads((out / "summary.json").read_text())
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
              if line.strip() and json.loads(line).get("type") == "epoch"]
    report(data, summary, epochs, wall)
    return {**summary, "wall": wall}


def report(data: Path, summary: dict, epochs: list[dict], wall: float) -> None:
    reached = next((e for e in epochs if e["test_accuracy"] >= TUTORIAL_ACCURACY), None)
    print(f"\n--recipe fast on {data}: {summary['dataset']['train_images']} train / "
          f"{summary['dataset']['test_images']} test images")
    print(f"{'epoch':>5}{'test acc':>10}{'train s':>9}{'wall s':>9}{'img/s':>8}")
    for e in epochs:
        print(f"{e['epoch']:5d}{e['test_accuracy']:10.2%}{e['elapsed_seconds']:9.1f}"
              f"{e.get('wall_seconds', float('nan')):9.1f}{e['images_per_second']:8.0f}")
    print(f"wall time          {wall:.1f} s (process start to exit: imports, data, evaluations, outputs)")
    print(f"test accuracy      {summary['test_accuracy']:.2%} after {summary['epochs']} epochs "
          f"({summary.get('small_epochs')} on smaller images, final TTA {summary.get('tta_final')}) at --width "
          f"{summary['config']['width']}")
    budget = summary.get("time_budget")
    if budget:
        over = wall / budget["seconds"] - 1
        verdict = "within" if over <= 0.03 else "BEYOND"
        print(f"time budget        {budget['seconds']:g} s: wall {over:+.1%} of it ({verdict} the goal of +3 %); "
              f"predicted {budget['predicted']['total']:.0f} s, spent {budget['spent']['total']:.0f} s by the run's "
              f"own clock; measuring {budget['spent']['measuring']:.1f} s")
    if reached:
        print(f"reached {TUTORIAL_ACCURACY:.0%}        at epoch {reached['epoch']}: "
              f"{reached['elapsed_seconds']:.1f} s of training, {reached.get('wall_seconds', float('nan')):.1f} s "
              "since start")
    else:
        print(f"reached {TUTORIAL_ACCURACY:.0%}        never")
    print(f"images per second  {summary['images_per_second']:.0f} (training only)")
    print(f"precision          {summary.get('precision')}, {summary.get('threads')} threads, torch "
          f"{summary['versions']['torch']}")


def finish(work: Path, keep: bool, load_before: str) -> None:
    """The closing lines every benchmark prints, then its work folder kept or removed."""
    print(f"load before        {load_before}\nload after         {uptime()}")
    if keep:
        print(f"kept               {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
