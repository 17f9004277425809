"""The real data for benchmarks, from ../shared/datasets, unpacked once into a cache folder outside the repo (never
committed): CIFAR-10 (cifar10-jpg.tar.gz) in both layouts the trainer reads, and photos20.tar."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TRAINJOB_SHARED", REPO.parent / "shared"))
ARCHIVE = SHARED / "datasets" / "cifar10-jpg.tar.gz"
PHOTOS20 = SHARED / "datasets" / "photos20.tar"
CONVERTER = SHARED / "tools" / "cifar_batches_from_folders.py"
CACHE = Path(os.environ.get("TRAINJOB_BENCH_CACHE", Path.home() / ".cache" / "trainjob-bench"))


def _unpacked(archive: Path, dest: Path, marker: str) -> Path:
    """archive unpacked into dest once: dest is the folder holding `marker` (a folder name) inside the archive."""
    if not (dest / marker).is_dir():
        if not archive.is_file():
            sys.exit(f"error: the benchmark needs {archive} (set TRAINJOB_SHARED to the folder holding datasets/)")
        print(f"unpacking {archive} into {dest} (once)", flush=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        roots = [p for p in tmp.rglob(marker) if p.is_dir()]
        os.replace(roots[0].parent, dest)
    return dest


def cifar_folders() -> Path:
    """train/<class>/*.jpg and test/<class>/*.jpg"""
    return _unpacked(ARCHIVE, CACHE / "cifar10-jpg", "train")


def photos20() -> Path:
    """<class>/*.jpg: 1,552 real photos in 20 classes, no split."""
    return _unpacked(PHOTOS20, CACHE / "photos20", "school-bus")


def cifar_batches() -> Path:
    """A folder holding cifar-10-batches-py/, as the tutorial's data folder does."""
    dest = CACHE / "cifar10-batches"
    if not (dest / "cifar-10-batches-py" / "test_batch").is_file():
        print(f"converting to the tutorial's batches layout in {dest} (once)", flush=True)
        subprocess.run([sys.executable, str(CONVERTER), str(cifar_folders()), str(dest)], check=True)
    return dest
