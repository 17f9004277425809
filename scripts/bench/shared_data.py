"""The real CIFAR-10 for benchmarks: ../shared/datasets/cifar10-jpg.tar.gz, unpacked and converted once into a cache
folder outside the repo (never committed), in both layouts the trainer reads."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TRAINJOB_SHARED", REPO.parent / "shared"))
ARCHIVE = SHARED / "datasets" / "cifar10-jpg.tar.gz"
CONVERTER = SHARED / "tools" / "cifar_batches_from_folders.py"
CACHE = Path(os.environ.get("TRAINJOB_BENCH_CACHE", Path.home() / ".cache" / "trainjob-bench"))


def cifar_folders() -> Path:
    """train/<class>/*.jpg and test/<class>/*.jpg"""
    dest = CACHE / "cifar10-jpg"
    if not (dest / "train").is_dir():
        if not ARCHIVE.is_file():
            sys.exit(f"error: the benchmark needs {ARCHIVE} (set TRAINJOB_SHARED to the folder holding datasets/)")
        print(f"unpacking {ARCHIVE} into {dest} (once)", flush=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(tmp, filter="data")
        roots = [p for p in tmp.rglob("train") if p.is_dir()]
        os.replace(roots[0].parent, dest)
    return dest


def cifar_batches() -> Path:
    """A folder holding cifar-10-batches-py/, as the tutorial's data folder does."""
    dest = CACHE / "cifar10-batches"
    if not (dest / "cifar-10-batches-py" / "test_batch").is_file():
        print(f"converting to the tutorial's batches layout in {dest} (once)", flush=True)
        subprocess.run([sys.executable, str(CONVERTER), str(cifar_folders()), str(dest)], check=True)
    return dest
