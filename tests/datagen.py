"""Small, learnable datasets written to disk in the layouts users give us: CIFAR-10 batches, the tar.gz, image folders.

Pixels come from trainjob.data.synthetic.pattern_images (class colour + stripes + noise), so a tiny CNN beats chance on
~100 images within an epoch or two, and the same seed writes the same bytes.
"""

import io
import pickle
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from trainjob.data.synthetic import balanced_labels, pattern_images

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES_DIR = "cifar-10-batches-py"
TAR_NAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = 5  # data_batch_1 .. data_batch_5, like the original

# Extension each PIL mode falls back to when the requested one cannot store it (JPEG has no alpha, palette or 16-bit).
_JPEG_MODES = {"L", "RGB", "CMYK"}
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}
_FALLBACK_EXT = {"CMYK": ".jpg", "F": ".tif", "I": ".tif", "I;16B": ".tif"}


def cifar_label_names(num_classes: int) -> list[str]:
    return CIFAR10_LABEL_NAMES[:num_classes] if num_classes <= 10 else [f"class_{i}" for i in range(num_classes)]


def _cifar_split(n: int, num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    labels = balanced_labels(n, num_classes, rng)
    pixels = pattern_images(labels, num_classes, (32, 32), rng)  # (N, 32, 32, 3) uint8
    rows = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2).reshape(n, 3072))  # (N, 3072): R plane, G plane, B plane
    return rows, [int(v) for v in labels]


def _py2_pickle(obj) -> bytes:
    """Pickle obj the way python 2's cPickle wrote the original batches: protocol 2, str as py2 byte strings (U/T),
    arrays through numpy.core.multiarray._reconstruct. Supports dict, list, str, int, None and uint8 arrays."""
    def text(value: str | bytes) -> bytes:
        raw = value.encode() if isinstance(value, str) else value
        return (b"U" + bytes([len(raw)]) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))) + raw

    def integer(value: int) -> bytes:
        if 0 <= value < 256:
            return b"K" + bytes([value])
        return b"M" + struct.pack("<H", value) if 0 <= value < 65536 else b"J" + struct.pack("<i", value)

    def emit(value) -> bytes:
        if isinstance(value, dict):
            return b"}(" + b"".join(emit(k) + emit(v) for k, v in value.items()) + b"u"
        if isinstance(value, list):
            return b"](" + b"".join(emit(v) for v in value) + b"e"
        if isinstance(value, (str, bytes)):
            return text(value)
        if isinstance(value, (int, np.integer)):
            return integer(int(value))
        if value is None:
            return b"N"
        if isinstance(value, np.ndarray) and value.dtype == np.uint8:
            dtype = (b"cnumpy\ndtype\n" + text("u1") + b"K\x00K\x01\x87R"
                     + b"(K\x03" + text("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
            shape = b"(" + b"".join(integer(n) for n in value.shape) + b"t"
            return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + b"K\x00\x85" + text("b") + b"\x87R"
                    + b"(K\x01" + shape + dtype + b"\x89" + text(np.ascontiguousarray(value).tobytes()) + b"tb")
        raise TypeError(f"cannot write {type(value).__name__} as a python 2 pickle")

    return b"\x80\x02" + emit(obj) + b"."


def _dump_batch(path: Path, batch: dict, bytes_keys: bool) -> None:
    if bytes_keys:
        # The original files are python 2 pickles: read with encoding="bytes", every str comes back as bytes.
        path.write_bytes(_py2_pickle(batch))
    else:
        # What ../shared/tools/cifar_batches_from_folders.py writes: python 3, protocol 2 (bytes via _codecs.encode).
        path.write_bytes(pickle.dumps(batch, protocol=2))


def write_cifar_batches(folder, n_train: int = 60, n_test: int = 30, num_classes: int = 10, bytes_keys: bool = False,
                        with_meta: bool = True, seed: int = 0, inside: bool = True) -> Path:
    """Write folder/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}; return that batches folder.

    inside=False writes the batch files straight into folder (the user pointed at the batches folder itself).
    """
    folder = Path(folder)
    out = folder / BATCHES_DIR if inside else folder
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data, labels = _cifar_split(n_train, num_classes, rng)
    for i, part in enumerate(np.array_split(np.arange(n_train), TRAIN_BATCHES), start=1):
        _dump_batch(out / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of {TRAIN_BATCHES}",
            "labels": [labels[j] for j in part],
            "data": data[part],
            "filenames": [f"img_{j:05d}.png" for j in part],
        }, bytes_keys)
    test_data, test_labels = _cifar_split(n_test, num_classes, rng)
    _dump_batch(out / "test_batch", {
        "batch_label": "testing batch 1 of 1", "labels": test_labels, "data": test_data,
        "filenames": [f"test_{j:05d}.png" for j in range(n_test)],
    }, bytes_keys)
    if with_meta:
        _dump_batch(out / "batches.meta", {
            "num_cases_per_batch": max(1, n_train // TRAIN_BATCHES),
            "label_names": cifar_label_names(num_classes), "num_vis": 3072,
        }, bytes_keys)
    return out


def write_cifar_tar(folder, **kwargs) -> Path:
    """Write only folder/cifar-10-python.tar.gz holding cifar-10-batches-py/... (as downloaded); return the archive."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inside = kwargs.pop("inside", True)
    archive = folder / TAR_NAME
    with tempfile.TemporaryDirectory() as tmp:
        batches = write_cifar_batches(tmp, inside=True, **kwargs)
        with tarfile.open(archive, "w:gz") as tar:
            if inside:
                tar.add(batches, arcname=BATCHES_DIR, recursive=False)
            for f in sorted(batches.iterdir()):
                tar.add(f, arcname=f"{BATCHES_DIR}/{f.name}" if inside else f.name)
    return archive


def write_tar_members(archive, members: dict[str, bytes]) -> Path:
    """A tar.gz with exactly these member names (used to build traversal and other hostile archives)."""
    archive = Path(archive)
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive


def _to_mode(rgb: Image.Image, mode: str) -> Image.Image:
    """Convert a generated RGB image into mode, keeping the class signal (16-bit modes use the full 0-65535 range)."""
    if mode in ("I;16", "I", "I;16B"):
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257  # 255 -> 65535: a loader that clips would see white
        if mode == "I":
            return Image.fromarray(grey.astype(np.int32))
        return Image.fromarray(grey.astype(">u2" if mode == "I;16B" else np.uint16))
    if mode == "F":
        return Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32))  # 0-255 floats
    if mode == "P":
        img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        img.info["transparency"] = 0  # palette entry 0 transparent: the loader must composite, not crash
        return img
    if mode == "RGBA":
        img = rgb.convert("RGBA")
        alpha = np.full(rgb.size[::-1], 255, dtype=np.uint8)
        alpha[: alpha.shape[0] // 4] = 0  # top quarter transparent
        img.putalpha(Image.fromarray(alpha))
        return img
    return rgb.convert(mode)


def _extension_for(mode: str, wanted: str) -> str:
    fmt = wanted.lower()
    if fmt in (".jpg", ".jpeg") and mode in _JPEG_MODES:
        return wanted
    if fmt == ".png" and mode in _PNG_MODES:
        return wanted
    if fmt in (".bmp", ".gif", ".webp") and mode in {"L", "RGB", "P"}:
        return wanted
    if fmt in (".tif", ".tiff"):
        return wanted
    return _FALLBACK_EXT.get(mode, ".png")


def write_image_folders(folder, classes: Sequence[str] = ("cat", "dog", "ship"), per_class_train: int = 12,
                        per_class_test: int = 4, size=(32, 32), modes: Sequence[str] = ("RGB",),
                        split: str | None = "test", seed: int = 0,
                        extensions: Sequence[str] = (".png",)) -> Path:
    """Write folder/train/<class>/* and folder/<split>/<class>/*; split=None writes one folder/<class>/* tree.

    size is (width, height), or a list of them to cycle through (mixed sizes). modes and extensions are cycled per
    image (e.g. modes=("L", "RGBA", "P", "I;16", "RGB"), extensions=(".png", ".JPG", ".jpeg")); a mode the
    extension cannot store (RGBA as JPEG) falls back to PNG, CMYK to JPEG, F and I to TIFF. Returns folder.
    """
    folder = Path(folder)
    sizes = [tuple(size)] if isinstance(size[0], int) else [tuple(s) for s in size]
    rng = np.random.default_rng(seed)
    if split is None:
        trees = [(folder, per_class_train + per_class_test)]
    else:
        trees = [(folder / "train", per_class_train), (folder / split, per_class_test)]
    counter = 0
    for root, per_class in trees:
        for label, cls in enumerate(classes):
            (root / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                width, height = sizes[counter % len(sizes)]
                mode = modes[counter % len(modes)]
                ext = _extension_for(mode, extensions[counter % len(extensions)])
                counter += 1
                pixels = pattern_images(np.array([label]), len(classes), (height, width), rng)[0]  # (H, W, 3)
                img = _to_mode(Image.fromarray(pixels), mode)
                img.save(root / cls / f"{cls}_{i:03d}{ext}", **({"quality": 95} if ext.lower() in (".jpg", ".jpeg")
                                                                  else {}))
    return folder


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb that costs nothing to write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


class ShellPayload:
    """Pickles as os.system("touch MARKER"): a batch that runs code when a plain unpickler loads it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def rewrite_batch(batch_file, **changes) -> None:
    """Load a CIFAR batch file, update its dict with changes, and write it back (pickle protocol 2, as CIFAR's)."""
    batch_file = Path(batch_file)
    with open(batch_file, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch.update(changes)
    batch_file.write_bytes(pickle.dumps(batch, protocol=2))
