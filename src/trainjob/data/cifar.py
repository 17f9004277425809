"""CIFAR-10 "python version": the cifar-10-batches-py/ folder, or cifar-10-python.tar.gz read in place.

No per-image work: each batch's (N, 3072) rows are already R, G, B planes of 32x32, so a reshape gives (N, 3, 32, 32).
"""

import gzip
import io
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from trainjob.data.dataset import MAX_CLASSES
from trainjob.data.detect import BATCHES_DIR, TAR_NAME, printable
from trainjob.data.safe_pickle import load_cifar_pickle
from trainjob.errors import DataError

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_SIDE = 32
TEST_BATCH = "test_batch"
META = "batches.meta"
_TRAIN_BATCH = re.compile(r"data_batch_(\d+)")
MAX_MEMBER_BYTES = 1 << 30  # an original batch is ~31 MB; a bigger member is not CIFAR (and could exhaust memory)
# The original archive unpacks to 178 MB in 8 members. tarfile reads some headers whole before any member can be
# checked (a GNU long name of 1 GiB in a 1 MB file): every byte it reads is counted, and the archive refused past this.
MAX_TAR_BYTES = 256 << 20
MAX_TAR_MEMBERS = 1000
RESIZE_CHUNK = 1024  # images resized at a time, bounding the float32 working copy


@dataclass
class CifarArrays:
    train_x: np.ndarray  # (N, 3, 32, 32) uint8
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray  # (M, 3, 32, 32) uint8
    test_y: np.ndarray  # (M,) int64
    classes: list[str]
    train_batches: list[str]  # the data_batch_* names read, in order


def _is_train_batch(name: str) -> bool:
    return _TRAIN_BATCH.fullmatch(name) is not None


def _batch_order(name: str) -> int:
    return int(_TRAIN_BATCH.fullmatch(name).group(1))


def _text(value) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _as_dict(obj, name: str) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{name} holds a {type(obj).__name__}, expected a dict with 'data' and 'labels' as in the "
                        "CIFAR-10 python batches; replace the file with the original")
    return {_text(k): v for k, v in obj.items()}  # python 2 batches have bytes keys (b"data")


def label_names(meta, name: str) -> list[str]:
    meta = _as_dict(meta, name)
    names = meta.get("label_names", meta.get("fine_label_names"))
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{name} has no usable 'label_names' (keys: {sorted(meta)}): expected a list of "
                        "class names; replace the file, or delete it to use the 10 CIFAR-10 names")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{name} lists {len(names)} label_names, more than the {MAX_CLASSES} classes trainjob trains: "
                        "replace the file, or delete it to use the 10 CIFAR-10 names")
    return [printable(_text(n)) for n in names]


def parse_batch(obj, name: str, num_classes: int, classes_from: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch dict -> images (N, 3, 32, 32) uint8 and labels (N,) int64, after checking every field."""
    batch = _as_dict(obj, name)
    data = batch.get("data")
    labels = batch.get("labels", batch.get("fine_labels"))
    if data is None or labels is None:
        raise DataError(f"{name} has keys {sorted(batch)}: expected 'data' and 'labels' as in the CIFAR-10 python "
                        "batches; replace the file with the original")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        found = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{name}: 'data' is a {found}, expected a uint8 array of shape (N, 3072); "
                        "the file was not written as a CIFAR batch: regenerate it with uint8 pixels")
    if not (data.ndim == 2 and data.shape[1] == 3 * CIFAR_SIDE * CIFAR_SIDE or data.shape[1:] == (3, 32, 32)):
        raise DataError(f"{name}: 'data' has shape {tuple(data.shape)}, expected (N, 3072) or (N, 3, 32, 32) "
                        "(32x32 RGB planes); regenerate the batch in the CIFAR layout")
    images = np.ascontiguousarray(data).reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise DataError(f"{name}: 'labels' is {y.dtype} with shape {tuple(y.shape)}, expected a list of integer class "
                        "indices; regenerate the batch")
    if len(y) != len(images):
        raise DataError(f"{name} has {len(images)} images but {len(y)} labels: expected one label per image; "
                        "the file is damaged or was written wrongly: replace it")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{name}: label {bad} is out of range: expected 0..{num_classes - 1} ({num_classes} classes "
                        f"from {classes_from}); add a batches.meta whose label_names lists every class, "
                        "or fix the labels")
    return images, y.astype(np.int64)


def _assemble(objects: dict[str, object], where: str) -> CifarArrays:
    """objects maps batch file name -> unpickled object; where names the folder or archive for messages."""
    train_names = sorted((n for n in objects if _is_train_batch(n)), key=_batch_order)
    missing = ([] if train_names else ["data_batch_1..5"]) + ([] if TEST_BATCH in objects else [TEST_BATCH])
    if missing:
        raise DataError(f"{where} has no {' or '.join(missing)}: expected data_batch_1..5, test_batch and "
                        f"batches.meta as in {TAR_NAME}; found {sorted(objects) or 'no batch files'}; "
                        "copy the whole cifar-10-batches-py folder")
    if META in objects:
        classes, classes_from = label_names(objects[META], f"{where}/{META}"), META
    else:
        classes, classes_from = list(CIFAR10_LABEL_NAMES), f"the CIFAR-10 names ({META} missing)"
    parts = [parse_batch(objects[n], f"{where}/{n}", len(classes), classes_from) for n in train_names]
    test_x, test_y = parse_batch(objects[TEST_BATCH], f"{where}/{TEST_BATCH}", len(classes), classes_from)
    return CifarArrays(train_x=np.concatenate([p[0] for p in parts]), train_y=np.concatenate([p[1] for p in parts]),
                       test_x=test_x, test_y=test_y, classes=classes, train_batches=train_names)


def read_batches_folder(folder: Path) -> CifarArrays:
    where = printable(str(folder))
    objects = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and (_is_train_batch(path.name) or path.name in (TEST_BATCH, META)):
            try:
                with open(path, "rb") as f:
                    objects[path.name] = load_cifar_pickle(f, f"{where}/{path.name}")
            except OSError as e:
                raise DataError(f"cannot read {where}/{path.name}: {e.strerror or e}; expected a readable CIFAR "
                                "batch file; check the file's permissions or copy it again") from e
    return _assemble(objects, where)


def _check_member(member: tarfile.TarInfo, where: str) -> None:
    """Refuse names and kinds a genuine archive never has, before anything is read from the member."""
    parts = PurePosixPath(member.name).parts
    unsafe = (member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0])
              or "\\" in member.name)
    if unsafe:
        problem = "points outside the archive (absolute path or '..')"
    elif member.issym() or member.islnk():
        problem = f"is a link to {member.linkname!r}"
    elif not (member.isfile() or member.isdir()):
        problem = "is a device, pipe or other special file"
    elif member.size > MAX_MEMBER_BYTES:
        problem = f"is {member.size} bytes, far larger than a CIFAR batch"
    else:
        return
    raise DataError(f"refusing to read {where}: member {member.name!r} {problem}; a genuine {TAR_NAME} holds only "
                    f"{BATCHES_DIR}/ files: download the archive again from https://www.cs.toronto.edu/~kriz/cifar.html")


class _Bounded(io.RawIOBase):
    """The decompressed archive, read forward, refusing to yield more than MAX_TAR_BYTES in all."""

    def __init__(self, inner, where: str):
        self.inner, self.where, self.total = inner, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.inner.readinto(buffer)
        self.total += n
        if self.total > MAX_TAR_BYTES:
            raise DataError(f"refusing to read {self.where}: it unpacks to more than {MAX_TAR_BYTES >> 20} MB, and a "
                            f"genuine {TAR_NAME} to 178 MB: download the archive again from "
                            "https://www.cs.toronto.edu/~kriz/cifar.html")
        return n


def read_tar(archive: Path) -> CifarArrays:
    """Stream the archive (mounts are read-only: nothing is extracted to disk); only the batch members are parsed."""
    where = printable(str(archive))
    objects = {}
    try:
        with gzip.open(archive) as unpacked, tarfile.open(fileobj=_Bounded(unpacked, where), mode="r|") as tar:
            for count, member in enumerate(tar, start=1):  # "r|": one forward pass, no seeking back
                if count > MAX_TAR_MEMBERS:
                    raise DataError(f"refusing to read {where}: more than {MAX_TAR_MEMBERS} members, and a genuine "
                                    f"{TAR_NAME} has 8: download the archive again")
                _check_member(member, where)
                base = PurePosixPath(member.name).name
                if member.isfile() and (_is_train_batch(base) or base in (TEST_BATCH, META)):
                    objects[base] = load_cifar_pickle(tar.extractfile(member), f"{where}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read {where}: {detail}; expected a gzip-compressed tar (the CIFAR-10 python "
                        "version); the archive is corrupt or truncated: download it again") from e
    return _assemble(objects, where)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, h, w) uint8 -> (N, 3, size, size) uint8, antialiased bilinear, in chunks to bound float memory."""
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], RESIZE_CHUNK):
        chunk = images[start:start + RESIZE_CHUNK].float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out
