#!/usr/bin/env python3
"""Feature-extraction rates of the EfficientNet-Lite backbones on this machine, and optionally what each choice
scores on photos20: the figures a time budget for `--recipe transfer` picks a backbone, a size and --finetune from.

The rate is trainjob.backbone_rates.extraction_rate, in this process: the network work of extraction (normalise,
forward in bf16 where the CPU has it, float16 rows), in passes of features.CPU_PASS random images after a warm-up pass;
--repeat takes the best of several measurements (this machine is shared). With --train each case also runs as the
real CLI (`train --recipe transfer`, 20 % of each class held out, an empty feature cache), for its wall time, test
accuracy and the rate its log reports (decoding included).

    python scripts/bench/backbone_rates.py                       rates of the default cases
    python scripts/bench/backbone_rates.py --train               ... and a cold run of each on photos20
    python scripts/bench/backbone_rates.py --cases efficientnet_lite2@260+ft,efficientnet_lite0@256
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench.bench_fast import cpu_model, finish, uptime  # noqa: E402

# backbone@pixels, "+ft" for --finetune. Lite0 at 256 is the transfer recipe's default.
DEFAULT_CASES = ("efficientnet_lite0@224,efficientnet_lite0@256,efficientnet_lite1@240,efficientnet_lite2@224,"
                 "efficientnet_lite2@260,efficientnet_lite0@256+ft,efficientnet_lite2@260+ft")


def parse_case(text: str) -> tuple[str, int, bool]:
    name, _, rest = text.partition("@")
    size, finetune = (rest[:-3], True) if rest.endswith("+ft") else (rest, False)
    if not name or not size.isdigit():
        sys.exit(f"error: case {text!r}: expected BACKBONE@PIXELS or BACKBONE@PIXELS+ft, "
                 "e.g. efficientnet_lite2@260+ft")
    return name, int(size), finetune


def best_rate(name: str, size: int, finetune: bool, repeat: int) -> float:
    from trainjob import backbones
    from trainjob.backbone_rates import extraction_rate

    parts = backbones.build_parts(name)  # built once: the repeats time the network, not its construction
    return max(extraction_rate(name, size, finetune=finetune, parts=parts) for _ in range(repeat))


def cold_run(name: str, size: int, finetune: bool, work: Path, data: Path) -> dict:
    from bench.bench_transfer import VAL_FRACTION, run_case

    tag = f"{name}@{size}{'+ft' if finetune else ''}"
    env = {**os.environ, "TRAINJOB_CACHE_DIR": str(work / f"cache-{tag}"), "PYTHONUNBUFFERED": "1"}
    flags = ["--recipe", "transfer", "--data_path", str(data), "--val_fraction", VAL_FRACTION, "--backbone", name,
             "--image_size", str(size), *(["--finetune"] if finetune else [])]
    return run_case(tag, flags, work, env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated BACKBONE@PIXELS[+ft] (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="rate measurements per case; the best is shown")
    p.add_argument("--train", action="store_true", help="also a cold `train --recipe transfer` run of each case")
    p.add_argument("--keep", action="store_true", help="keep the output folders and logs of --train")
    args = p.parse_args()
    cases = [parse_case(c) for c in args.cases.split(",") if c]
    load_before = uptime()
    print(f"{load_before}\n{cpu_model()} ({os.cpu_count()} CPUs)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="trainjob-bench-rates-"))
    data = None
    if args.train:
        from bench.shared_data import photos20

        data = photos20()
    rows = []
    for name, size, finetune in cases:
        rate = best_rate(name, size, finetune, args.repeat)
        print(f"{name}@{size}{' --finetune' if finetune else ''}: {rate:.1f} images/s (network)", flush=True)
        rows.append((name, size, finetune, rate, cold_run(name, size, finetune, work, data) if args.train else None))
    print(f"\n{'backbone':<20}{'px':>5}{'finetune':>9}{'net img/s':>11}{'run img/s':>11}{'wall s':>8}{'test acc':>10}")
    for name, size, finetune, rate, run in rows:
        cells = f"{run['rate']:>11}{run['wall']:8.1f}{run['accuracy']:10.2%}" if run else f"{'-':>11}{'-':>8}{'-':>10}"
        print(f"{name:<20}{size:>5}{'yes' if finetune else 'no':>9}{rate:11.1f}{cells}")
    if data:
        print(f"data               {data}")
    finish(work, args.keep, load_before)


if __name__ == "__main__":
    main()
