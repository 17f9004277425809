#!/usr/bin/env python3
"""Check that a folder holds a dataset the trainer can use, then upload it to the default datastore (05-upload-data.py).

    make upload-data                     # ./data -> <default datastore>/datasets/cifar10
    make upload-data DATA=~/my-images AML_ARGS=--check-only
    make upload-data AML_SDK=v2 [DRY_RUN=1]   # the same folder, then a uri_folder data asset `cifar10` pointing at it

The check is the trainer's own dataset detection (trainjob.data.load_dataset), so a folder it would refuse is refused
here, with the same message, before anything is uploaded. Uploading again overwrites files of the same name.

SDK v2 has no public call that uploads to a chosen datastore path (ml_client.data uploads to a hashed LocalUpload/
folder), so --sdk v2 writes the files with azure-storage-blob, the library azure-ai-ml itself uploads with, into the
datastore's container under --target-path, signed with the datastore's key or SAS when it has one, else with your
own sign-in (which then needs the Storage Blob Data Contributor role). It then registers that folder as a data asset.
Exit codes: see common.py (2 when the folder holds no usable dataset).
"""

from __future__ import annotations

import sys
from pathlib import Path

import common
import v1
import v2


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--src", default="./data", help="local folder to check and upload (the tutorial's ./data)")
    p.add_argument("--target-path", default=common.DATASTORE_PATH, help="folder on the datastore")
    p.add_argument("--datastore", help="datastore name (default: the workspace's default datastore)")
    p.add_argument("--check-only", action="store_true", help="check the folder, upload nothing (no Azure needed)")
    p.add_argument("--sdk", default="v1", choices=["v1", "v2"], help="v1: azureml-core; v2: azure-ai-ml")
    p.add_argument("--asset-name", default="cifar10", help="v2: the data asset registered for the uploaded folder")
    p.add_argument("--dry-run", action="store_true", help="check the folder and say what would be uploaded (v2: "
                   "also write build/aml/data.yml); contact nothing")
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
    if args.dry_run and args.sdk == "v1":
        files = files_to_upload(args.src, args.target_path)
        print(f"dry run (nothing sent): {len(files)} files would go to "
              f"{args.datastore or common.DEFAULT_DATASTORE}/{args.target_path}/")
        return
    if args.sdk == "v2":
        main_v2(args)
        return
    ws = v1.load_workspace(args)
    from azureml.core import Dataset, Datastore

    datastore = Datastore.get(ws, args.datastore) if args.datastore else ws.get_default_datastore()
    print(f"uploading {args.src} to {datastore.name}/{args.target_path}")
    # Dataset.File.upload_directory is the SDK's replacement for the tutorial's deprecated datastore.upload().
    Dataset.File.upload_directory(src_dir=args.src, target=(datastore, args.target_path), overwrite=True,
                                  show_progress=True)
    print(f"uploaded; submit with `make submit-aml` (mounts {datastore.name}/{args.target_path} as 'input')")


def files_to_upload(src: str, target_path: str) -> list[tuple[Path, str]]:
    """(local file, blob name) for every file under src, in a stable order: the folder's layout under target_path."""
    root = Path(src)
    prefix = target_path.strip("/")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [(p, f"{prefix}/{p.relative_to(root).as_posix()}") for p in files]


# --- SDK v2 ---------------------------------------------------------------------------------------------------------
def data_asset(name: str, datastore: str, target_path: str, src: str):
    """The uploaded folder as a v2 uri_folder data asset (the version is the service's next number)."""
    v2.import_sdk()
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Data

    return Data(name=name, type=AssetTypes.URI_FOLDER, path=v2.datastore_uri(datastore, target_path),
                description=f"trainjob: {Path(src).resolve().name} uploaded by make upload-data")


def container_client(datastore, identity):
    """A ContainerClient for a v2 blob datastore: its key or SAS when the workspace returns one, else `identity`."""
    from azure.ai.ml.entities import AccountKeyConfiguration, AzureBlobDatastore, SasTokenConfiguration
    from azure.storage.blob import ContainerClient

    if not isinstance(datastore, AzureBlobDatastore):
        raise common.AmlError(f"datastore {datastore.name} is {datastore.type}, not Azure Blob: pass --datastore "
                              "with a blob datastore (the workspace's default is one)")
    credentials = datastore.credentials
    if isinstance(credentials, AccountKeyConfiguration):
        secret = credentials.account_key
    elif isinstance(credentials, SasTokenConfiguration):
        secret = credentials.sas_token
    else:
        secret = identity  # identity-based datastore: the caller's own token
    url = f"{datastore.protocol}://{datastore.account_name}.blob.{datastore.endpoint}"
    return ContainerClient(url, datastore.container_name, credential=secret)


def upload(container, files: list[tuple[Path, str]], workers: int = 8) -> int:
    """Upload every file (overwriting), several at a time since datasets are many small files; print progress.
    Returns the bytes sent. Any failed file stops the upload with its name: rerunning uploads everything again."""
    from concurrent.futures import ThreadPoolExecutor

    from azure.core.exceptions import AzureError

    total = sum(p.stat().st_size for p, _ in files)

    def put(item):
        path, name = item
        try:
            with path.open("rb") as f:
                container.upload_blob(name, f, overwrite=True)
        except AzureError as e:
            raise common.AmlError(f"could not upload {path} to {name} ({common._one_line(e)}); signed in with your "
                                  "own account, you need the Storage Blob Data Contributor role; rerun to upload "
                                  "again") from None
        return path.stat().st_size

    sent, step = 0, max(1, len(files) // 20)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, size in enumerate(pool.map(put, files), 1):
            sent += size
            if i % step == 0 or i == len(files):
                print(f"  {i}/{len(files)} files, {sent / 1e6:.1f} of {total / 1e6:.1f} MB", flush=True)
    return sent


def main_v2(args) -> None:
    files = files_to_upload(args.src, args.target_path)
    if args.dry_run:
        store = args.datastore or common.DEFAULT_DATASTORE
        path = v2.write_yaml(data_asset(args.asset_name, store, args.target_path, args.src), "data.yml")
        size = sum(p.stat().st_size for p, _ in files)
        print(f"wrote {path} (offline, nothing sent): {len(files)} files, {size / 1e6:.1f} MB would go to "
              f"{store}/{args.target_path}/, then data asset {args.asset_name}")
        return
    client = v2.ml_client(args)
    ops = client.datastores
    store = ops.get(args.datastore, include_secrets=True) if args.datastore else ops.get_default(include_secrets=True)
    print(f"uploading {len(files)} files from {args.src} to {store.name}/{args.target_path}")
    upload(container_client(store, v2.credential(args)), files)
    asset = client.data.create_or_update(data_asset(args.asset_name, store.name, args.target_path, args.src))
    print(f"uploaded; data asset {asset.name} version {asset.version}; submit with `make submit-aml AML_SDK=v2`")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
