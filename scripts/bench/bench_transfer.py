#!/usr/bin/env python3
"""make bench-transfer: `--recipe transfer` (frozen, warm cache, fine-tuned) against `--recipe fast` from scratch, in
one invocation, on real photos (../shared/datasets/photos20.tar, 20 % of each class held out) or the real CIFAR-10.

Each run is the real CLI in its own process. Wall time counts from process start to exit (imports, decoding,
feature extraction, training, every output); peak RSS is the process's own (wait4). The frozen run starts with an
empty feature cache; the warm run is the same command into a new output folder with that cache.

    make bench-transfer                          photos20: frozen, warm, --finetune, fast from scratch
    make bench-transfer ARGS="--seeds 0,1,2"     ... the transfer runs over three held-out splits
    make bench-transfer ARGS="--dataset cifar10 -- --image_size 128"   CIFAR-10 (flags after -- go to transfer)
    make bench-transfer ARGS="--memory 12000"    peak RSS of a frozen run on 12,000 generated 320 px JPEGs
    make bench-transfer ARGS="--time_budget 60"  the transfer runs to train's --time_budget: their epochs planned
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench.bench_fast import cpu_model, finish, train_command, uptime  # noqa: E402
from bench.shared_data import cifar_batches, photos20  # noqa: E402

# Held-out share and the from-scratch baseline of ../shared/datasets/README.md's photos20 figures.
VAL_FRACTION = "0.2"
FAST_ON_PHOTOS = ["--image_size", "64", "--epochs", "30"]


def timed_run(cmd: list[str], log_path: Path, env: dict) -> dict:
    """Run cmd to exit; returns wall seconds, peak RSS in MB and the log; exits the benchmark if it fails."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    text = log_path.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(cmd)} failed; its log: {log_path}\n{text[-2000:]}")
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "log": text}


def extraction_rate(log: str) -> str:
    found = re.search(r"features: (\d+) images in ([\d.]+) s \((\d+) images/s\)", log)
    return f"{found[3]}" if found else "cached" if "cache hit" in log else "-"


def run_case(name: str, flags: list[str], work: Path, env: dict) -> dict:
    out = work / name
    cmd = [*train_command(), *flags, "--output_dir", str(out), "--resume", "never", "--progress", "off"]
    print(f"$ {' '.join(cmd)}", flush=True)
    result = timed_run(cmd, work / f"{name}.log", env)
    summary = json.loads((out / "summary.json").read_text())
    budget = summary.get("time_budget")
    return {"name": name, **result, "accuracy": summary["test_accuracy"], "rate": extraction_rate(result["log"]),
            "epochs": summary["epochs"], "budget": f"{result['wall'] / budget['seconds'] - 1:+.1%}" if budget else "-"}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'run':<34}{'test acc':>10}{'wall s':>9}{'epochs':>7}{'vs budget':>10}{'extract img/s':>15}"
          f"{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['name']:<34}{r['accuracy']:10.2%}{r['wall']:9.1f}{r['epochs']:7d}{r['budget']:>10}{r['rate']:>15}"
              f"{r['rss_mb']:13.0f}")


def generated_jpegs(folder: Path, n: int) -> Path:
    """n photos-sized JPEGs (320x240) in 10 class folders: noise over a class colour, written once per n."""
    import numpy as np
    from PIL import Image

    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        return folder
    print(f"writing {n} 320x240 JPEGs into {folder} (once)", flush=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = folder / f"class_{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 128, (240, 320, 3), dtype=np.uint8) + np.uint8(12 * (i % 10))
        Image.fromarray(pixels).save(cls / f"{i:06d}.jpg", quality=90)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["photos20", "cifar10"], default="photos20")
    p.add_argument("--seeds", default="0", help="comma-separated split seeds for the transfer runs (photos20)")
    p.add_argument("--skip_fast", action="store_true", help="leave out the from-scratch baseline")
    p.add_argument("--skip_finetune", action="store_true", help="leave out the --finetune run")
    p.add_argument("--memory", type=int, metavar="N", help="only measure a frozen run on N generated JPEGs")
    p.add_argument("--keep", action="store_true", help="keep the output folders and logs")
    p.add_argument("--time_budget", type=float, metavar="SECONDS", help="train's --time_budget for the transfer "
                   "runs: each plans the epochs of its head (or fine-tuning) to end within it")
    p.add_argument("train_args", nargs="*", help="more flags for the transfer runs, after --")
    args = p.parse_args()
    if args.time_budget:
        args.train_args = ["--time_budget", f"{args.time_budget:g}", *args.train_args]
    work = Path(tempfile.mkdtemp(prefix="trainjob-bench-transfer-"))
    env = {**os.environ, "TRAINJOB_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    load_before = uptime()
    print(f"{load_before}\n{cpu_model()} ({os.cpu_count()} CPUs)", flush=True)
    rows = []
    if args.memory:
        data = generated_jpegs(Path(tempfile.gettempdir()) / f"trainjob-bench-jpegs-{args.memory}", args.memory)
        rows.append(run_case(f"transfer, {args.memory} JPEGs", ["--recipe", "transfer", "--data_path", str(data),
                                                                 *args.train_args], work, env))
    else:
        if args.dataset == "photos20":
            data, split = photos20(), ["--val_fraction", VAL_FRACTION]
        else:
            data, split = cifar_batches(), []
        transfer = ["--recipe", "transfer", "--data_path", str(data), *split, *args.train_args]
        seeds = [int(s) for s in args.seeds.split(",")]
        for seed in seeds:
            tag = f" (seed {seed})" if len(seeds) > 1 else ""
            shutil.rmtree(work / "cache", ignore_errors=True)  # the frozen run starts cold
            rows.append(run_case(f"transfer frozen, cold{tag}", [*transfer, "--seed", str(seed)], work, env))
            rows.append(run_case(f"transfer frozen, warm cache{tag}", [*transfer, "--seed", str(seed)], work, env))
            if not args.skip_finetune:
                rows.append(run_case(f"transfer --finetune{tag}", [*transfer, "--seed", str(seed), "--finetune"],
                                     work, env))
        if not args.skip_fast:
            fast = ["--recipe", "fast", "--data_path", str(data), *split,
                    *(FAST_ON_PHOTOS if args.dataset == "photos20" else [])]
            rows.append(run_case("fast from scratch", fast, work, env))
        if len(seeds) > 1:
            for kind in ("transfer frozen, cold", "transfer --finetune"):
                picked = [r["accuracy"] for r in rows if r["name"].startswith(kind)]
                if picked:
                    print(f"{kind}: mean test accuracy {statistics.mean(picked):.2%} over seeds {args.seeds}")
    print_table(rows)
    print(f"data               {data}")
    finish(work, args.keep, load_before)


if __name__ == "__main__":
    main()
