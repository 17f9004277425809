#!/usr/bin/env python3
"""make bench: the tutorial's original script against trainjob's same recipe, on the same data, in the same run.

Both train the tutorial's Net with SGD, batch 4, 2 epochs, --learning_rate 0.003 --momentum 0.92 (the tutorial's
values) on the real CIFAR-10 from ../shared/datasets (converted once, untimed, to the tutorial's
cifar-10-batches-py layout in a cache folder outside the repo). Each runs as its own process; its wall time counts
from process start to exit, data loading and evaluation included. Prints both, and the ratio.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench.cifar_data import cifar_batches  # noqa: E402


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
    args = p.parse_args()
    data = Path(args.data_path) if args.data_path else cifar_batches()
    work = Path(tempfile.mkdtemp(prefix="trainjob-make-bench-"))
    hp = ["--learning_rate", str(args.learning_rate), "--momentum", str(args.momentum)]
    rows = {}
    if args.only in (None, "tutorial"):
        result = work / "tutorial.json"
        wall = timed([sys.executable, str(REPO / "scripts/bench/tutorial_reference.py"), "--data_path", str(data),
                      *hp, "--result", str(result)], work / "tutorial.log")
        r = json.loads(result.read_text())
        rows["tutorial script"] = (wall, r["train_seconds"], r["test_accuracy"])
    if args.only in (None, "trainjob"):
        out = work / "trainjob"
        wall = timed([sys.executable, "-m", "trainjob", "--data_path", str(data), *hp, "--output_dir", str(out),
                      "--resume", "never", "--progress", "off"], work / "trainjob.log")
        s = json.loads((out / "summary.json").read_text())
        rows["trainjob"] = (wall, s["train_seconds"], s["test_accuracy"])

    load = os.getloadavg()[0]
    print(f"\nsame recipe (Net, SGD lr {args.learning_rate} momentum {args.momentum}, batch 4, 2 epochs), "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the end; logs in {work}")
    print(f"{'':18}{'wall s':>9}{'train s':>9}{'test acc':>10}")
    for name, (wall, train, acc) in rows.items():
        print(f"{name:18}{wall:9.1f}{train:9.1f}{acc:10.2%}")
    if len(rows) == 2:
        (w0, t0, a0), (w1, t1, a1) = rows.values()
        print(f"ratio: {w0 / w1:.2f}x less wall time, {t0 / t1:.2f}x less training time, "
              f"accuracy {100 * (a1 - a0):+.1f} points")


if __name__ == "__main__":
    main()
