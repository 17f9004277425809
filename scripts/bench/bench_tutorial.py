#!/usr/bin/env python3
"""make bench: the tutorial's original script against trainjob's same recipe, on the same data, in the same run.

Both train the tutorial's Net with SGD, batch 4, 2 epochs, --learning_rate 0.003 --momentum 0.92 (the tutorial's
values) on the real CIFAR-10 from ../shared/datasets (converted once, untimed, to the tutorial's
cifar-10-batches-py layout in a cache folder outside the repo). Each runs as its own process; its wall time counts
from process start to exit, data loading and evaluation included. Prints both, and the ratio.

One run of each is one draw: the tutorial script is unseeded and this recipe's test accuracy moves by a point or two
from seed to seed. --repeats N alternates the two N times (trainjob with seeds 0..N-1), so a drift in the machine's
speed hits both, and compares medians of time and means of accuracy.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench.shared_data import cifar_batches  # noqa: E402


def timed(cmd: list[str], log: Path) -> float:
    print("$ " + " ".join(cmd), flush=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"error: {cmd[1]} failed with exit {result.returncode}; its log: {log}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path", help="a folder in the tutorial's layout (default: the shared CIFAR-10, converted)")
    p.add_argument("--learning_rate", type=float, default=0.003)
    p.add_argument("--momentum", type=float, default=0.92)
    p.add_argument("--only", choices=["tutorial", "trainjob"], help="run one side only")
    p.add_argument("--repeats", type=int, default=1, help="runs of each side, alternating (default 1)")
    args = p.parse_args()
    data = Path(args.data_path) if args.data_path else cifar_batches()
    work = Path(tempfile.mkdtemp(prefix="trainjob-make-bench-"))
    hp = ["--learning_rate", str(args.learning_rate), "--momentum", str(args.momentum)]
    runs: dict[str, list[tuple[float, float, float]]] = {}  # side -> (wall s, train s, test accuracy) per run
    for i in range(args.repeats):
        if args.only in (None, "tutorial"):
            result = work / f"tutorial-{i}.json"
            wall = timed([sys.executable, str(REPO / "scripts/bench/tutorial_reference.py"), "--data_path",
                          str(data), *hp, "--result", str(result)], work / f"tutorial-{i}.log")
            r = json.loads(result.read_text())
            runs.setdefault("tutorial script", []).append((wall, r["train_seconds"], r["test_accuracy"]))
        if args.only in (None, "trainjob"):
            out = work / f"trainjob-{i}"
            wall = timed([sys.executable, "-m", "trainjob", "--data_path", str(data), *hp, "--seed", str(i),
                          "--output_dir", str(out), "--resume", "never", "--progress", "off"],
                         work / f"trainjob-{i}.log")
            s = json.loads((out / "summary.json").read_text())
            runs.setdefault("trainjob", []).append((wall, s["train_seconds"], s["test_accuracy"]))

    load = os.getloadavg()[0]
    print(f"\nsame recipe (Net, SGD lr {args.learning_rate} momentum {args.momentum}, batch 4, 2 epochs), "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; logs in {work}")
    print(f"{'':22}{'wall s':>9}{'train s':>9}{'test acc':>10}")
    summary = {}
    for name, rows in runs.items():
        for wall, train, acc in rows if len(rows) > 1 else []:
            print(f"{name:22}{wall:9.1f}{train:9.1f}{acc:10.2%}")
        walls, trains, accs = zip(*rows, strict=True)
        summary[name] = (statistics.median(walls), statistics.median(trains), statistics.fmean(accs))
        label = f"{name}, {len(rows)} runs" if len(rows) > 1 else name
        print(f"{label:22}{summary[name][0]:9.1f}{summary[name][1]:9.1f}{summary[name][2]:10.2%}"
              + ("   (median, median, mean)" if len(rows) > 1 else ""))
    if len(summary) == 2:
        (w0, t0, a0), (w1, t1, a1) = summary.values()
        print(f"ratio: {w0 / w1:.2f}x less wall time, {t0 / t1:.2f}x less training time, "
              f"accuracy {100 * (a1 - a0):+.1f} points")


if __name__ == "__main__":
    main()
