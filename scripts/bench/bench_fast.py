#!/usr/bin/env python3
"""make bench-fast: train `--recipe fast` on the real CIFAR-10 with the real CLI and report what it achieved.

The data come from ../shared/datasets (converted once, untimed, to the tutorial's cifar-10-batches-py layout in a
cache folder outside the repo) unless --data_path is given. The run's wall time counts from process start to exit:
imports, data loading, every evaluation and the files written at the end. Prints the wall time, the final test
accuracy, when the test accuracy first reached the tutorial recipe's 52 %, images per second, and the load average
(this machine is often shared: read the figures with it).
"""

import argparse
import json
import os
import platform
import shutil
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


def train_command() -> list[str]:
    script = Path(sys.executable).parent / "train"  # the console script of the venv running this benchmark
    return [str(script)] if script.is_file() else [sys.executable, "-m", "trainjob"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, help="passes over the training set (default: the fast recipe's)")
    p.add_argument("--data_path", help="a dataset folder (default: the shared CIFAR-10, converted once)")
    p.add_argument("--keep", action="store_true", help="keep the output folder (model.pt, metrics, log)")
    p.add_argument("train_args", nargs="*", help="more flags for train after --, e.g. -- --precision fp32")
    args = p.parse_args()
    data = Path(args.data_path) if args.data_path else cifar_batches()
    work = Path(tempfile.mkdtemp(prefix="trainjob-bench-fast-"))
    out = work / "outputs"
    cmd = [*train_command(), "--recipe", "fast", "--data_path", str(data), "--output_dir", str(out),
           "--resume", "never", "--progress", "lines", *(["--epochs", str(args.epochs)] if args.epochs else []),
           *args.train_args]
    load_before = uptime()
    print(f"{load_before}\n$ {' '.join(cmd)}", flush=True)
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
    reached = next((e for e in epochs if e["test_accuracy"] >= TUTORIAL_ACCURACY), None)

    print(f"\n--recipe fast on {data}: {summary['dataset']['train_images']} train / "
          f"{summary['dataset']['test_images']} test images")
    print(f"{'epoch':>5}{'test acc':>10}{'train s':>9}{'wall s':>9}{'img/s':>8}")
    for e in epochs:
        print(f"{e['epoch']:5d}{e['test_accuracy']:10.2%}{e['elapsed_seconds']:9.1f}"
              f"{e.get('wall_seconds', float('nan')):9.1f}{e['images_per_second']:8.0f}")
    print(f"wall time          {wall:.1f} s (process start to exit: imports, data, evaluations, outputs)")
    print(f"test accuracy      {summary['test_accuracy']:.2%} after {summary['epochs']} epochs at --width "
          f"{summary['config']['width']}")
    if reached:
        print(f"reached {TUTORIAL_ACCURACY:.0%}        at epoch {reached['epoch']}: "
              f"{reached['elapsed_seconds']:.1f} s of training, {reached.get('wall_seconds', float('nan')):.1f} s "
              "since start")
    else:
        print(f"reached {TUTORIAL_ACCURACY:.0%}        never")
    print(f"images per second  {summary['images_per_second']:.0f} (training only)")
    print(f"precision          {summary.get('precision')}, {summary.get('threads')} threads, torch "
          f"{summary['versions']['torch']}, {cpu_model()} ({os.cpu_count()} CPUs)")
    finish(work, args.keep, load_before)


def finish(work: Path, keep: bool, load_before: str) -> None:
    """The closing lines every benchmark prints, then its work folder kept or removed."""
    print(f"load before        {load_before}\nload after         {uptime()}")
    if keep:
        print(f"kept               {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
