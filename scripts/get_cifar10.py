#!/usr/bin/env python3
"""Download the real CIFAR-10 (python version) into DATA, laid out as the tutorial's data folder (make data).

DATA/cifar-10-python.tar.gz and DATA/cifar-10-batches-py/. Needs the internet; says so in one line when it is
unreachable (exit 2), and never leaves a half-written archive behind.
"""

import argparse
import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"  # published with the dataset
ARCHIVE = "cifar-10-python.tar.gz"


def download(url: str, dest: Path) -> None:
    tmp = dest.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if total:
                print(f"\rdownloading {url}: {done / total:.0%} of {total / 1e6:.0f} MB", end="", flush=True)
    print()
    os.replace(tmp, dest)


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", default="./data", help="folder to fill (default ./data)")
    p.add_argument("--url", default=URL, help="where to download from (a mirror, if you have one)")
    args = p.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    archive = data / ARCHIVE
    if not archive.exists():
        try:
            download(args.url, archive)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            print(f"error: cannot download CIFAR-10 from {args.url} ({getattr(e, 'reason', e)}): this machine has "
                  f"no route to it. Copy {ARCHIVE} into {data}/ by hand, or use your own image folders "
                  "(train/<class>/*.jpg), or `make run` for the demo", file=sys.stderr)
            return 2
    if md5(archive) != MD5:
        print(f"error: {archive} does not match the published checksum: delete it and run `make data` again",
              file=sys.stderr)
        return 2
    with tarfile.open(archive) as tar:
        tar.extractall(data, filter="data")  # refuses absolute paths, '..' and links out of the folder
    print(f"ready: {data}/cifar-10-batches-py (and {ARCHIVE}); train with: make run DATA={data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
