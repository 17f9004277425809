#!/usr/bin/env python3
"""Check that a folder holds a dataset the trainer can use, then upload it to the default datastore (05-upload-data.py).

    make upload-data                     # ./data -> <default datastore>/datasets/cifar10
    make upload-data DATA=~/my-images AML_ARGS=--check-only

The check is the trainer's own dataset detection (trainjob.data.load_dataset), so a folder it would refuse is refused
here, with the same message, before anything is uploaded. Uploading again overwrites files of the same name.
Exit codes: see common.py (2 when the folder holds no usable dataset).
"""

from __future__ import annotations

import sys
from pathlib import Path

import common


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--src", default="./data", help="local folder to check and upload (the tutorial's ./data)")
    p.add_argument("--target-path", default=common.DATASTORE_PATH, help="folder on the datastore")
    p.add_argument("--datastore", help="datastore name (default: the workspace's default datastore)")
    p.add_argument("--check-only", action="store_true", help="check the folder, upload nothing (no Azure needed)")
    common.add_workspace_args(p)
    return p


def check_dataset(src: str) -> dict:
    """The trainer's verdict on src: its description of the dataset, or AmlError with the trainer's own message."""
    from trainjob.data import load_dataset
    from trainjob.errors import DataError

    if not Path(src).is_dir():
        raise common.AmlError(f"--src {src} is not a folder: put the dataset there (`make data`) or pass --src FOLDER")
    try:
        dataset = load_dataset(src, image_size=32, val_fraction=0.1, seed=0, cache_dir="off", demo=False)
    except DataError as e:
        raise common.AmlError(f"not uploading {src}: {e}") from None
    return dataset.describe()


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    d = check_dataset(args.src)
    print(f"{args.src}: {d['format']}, {d['num_classes']} classes, {d['train_images']} train and "
          f"{d['test_images']} test images ({d['test_split']})")
    if args.check_only:
        return
    ws = common.load_workspace(args)
    from azureml.core import Dataset, Datastore

    datastore = Datastore.get(ws, args.datastore) if args.datastore else ws.get_default_datastore()
    print(f"uploading {args.src} to {datastore.name}/{args.target_path}")
    # Dataset.File.upload_directory is the SDK's replacement for the tutorial's deprecated datastore.upload().
    Dataset.File.upload_directory(src_dir=args.src, target=(datastore, args.target_path), overwrite=True,
                                  show_progress=True)
    print(f"uploaded; submit with `make submit-aml` (mounts {datastore.name}/{args.target_path} as 'input')")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
