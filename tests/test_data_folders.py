"""Image folders as users hand them over: train/test, train/val, one tree, odd formats, bad files, the cache."""

import multiprocessing
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import datagen
import loading
import numpy as np
import pytest
import torch
from PIL import Image

from trainjob import preprocess, progress
from trainjob.data import decode
from trainjob.errors import DataError


def load(path, **overrides):
    return loading.load(path, **{"val_fraction": 0.25, **overrides})


def load_error(path, **overrides) -> str:
    return loading.load_error(path, **{"val_fraction": 0.25, **overrides})


@pytest.mark.parametrize("split", ["test", "val"])
def test_train_and_test_or_val_folders(tmp_path, split):
    datagen.write_image_folders(tmp_path, classes=("ship", "cat", "dog"), split=split)
    ds, lines = load(tmp_path)
    assert lines[3] == str(sorted(["train", split]))
    assert ds.format == "image-folders" and ds.test_split == split
    assert ds.classes == ["cat", "dog", "ship"], "class order = sorted folder names"
    assert (len(ds.train), len(ds.test)) == (36, 12)
    assert ds.train.inputs.shape == (36, 3, 32, 32) and ds.train.inputs.dtype == torch.uint8
    assert torch.bincount(ds.test.labels).tolist() == [4, 4, 4]
    assert "dataset: image-folders, 3 classes, 36 train / 12 test images" in lines[-1]


def test_single_tree_is_split_per_class_by_seed(tmp_path):
    datagen.write_image_folders(tmp_path, split=None)  # 16 images per class
    first, _ = load(tmp_path, seed=1)
    again, _ = load(tmp_path, seed=1)
    other, _ = load(tmp_path, seed=2)
    assert first.format == "image-folder-split" and first.test_split == "held-out 25% per class (seed 1)"
    assert torch.bincount(first.test.labels).tolist() == [4, 4, 4]
    assert torch.bincount(first.train.labels).tolist() == [12, 12, 12]
    assert torch.equal(first.test.inputs, again.test.inputs)
    assert not torch.equal(first.test.inputs, other.test.inputs)


def test_train_alone_holds_out_part_of_train(tmp_path):
    datagen.write_image_folders(tmp_path, split="test")
    shutil.rmtree(tmp_path / "test")
    ds, lines = load(tmp_path)
    assert ds.format == "image-folder-split" and ds.test_split == "held-out 25% of train/ per class (seed 0)"
    assert any("train/ has no test/ or val/ beside it" in line for line in lines)


def test_every_mode_size_and_extension_becomes_rgb_at_image_size(tmp_path):
    modes = ("L", "LA", "RGBA", "P", "I;16", "I", "F", "CMYK", "RGB", "1")
    datagen.write_image_folders(tmp_path, modes=modes, size=[(32, 32), (64, 40), (20, 28), (300, 17)],
                                extensions=(".png", ".JPG", ".jpeg", ".bmp", ".TIFF", ".webp", ".gif"))
    names = {p.suffix for p in (tmp_path / "train").rglob("*.*")}
    assert {".png", ".JPG", ".jpeg", ".tif", ".TIFF"} <= names
    ds, _ = load(tmp_path, image_size=24)
    assert ds.skipped == [] and (len(ds.train), len(ds.test)) == (36, 12)
    assert ds.train.inputs.shape == (36, 3, 24, 24)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    for cls, value in (("half", 32768), ("full", 65535)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8), value, np.uint16)).save(tmp_path / cls / f"{i}.png")
    ds, _ = load(tmp_path, image_size=8)
    pairs = zip(ds.train.inputs, ds.train.labels, strict=True)
    means = {ds.classes[int(label)]: int(img.float().mean()) for img, label in pairs}
    assert means == {"full": 255, "half": 128}


def test_hidden_files_and_folders_are_ignored(tmp_path):
    datagen.write_image_folders(tmp_path)
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0junk")
    (tmp_path / "train" / "cat" / "._cat_000.png").write_bytes(b"resource fork")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    shutil.copytree(tmp_path / "train" / "dog", tmp_path / "train" / "dog" / ".thumbnails")
    ds, _ = load(tmp_path)
    assert ds.classes == ["cat", "dog", "ship"] and len(ds.train) == 36 and ds.skipped == []


def test_cache_hit_skips_decoding_and_a_changed_file_invalidates_it(tmp_path, monkeypatch):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    datagen.write_image_folders(data)
    first, lines = load(data, cache_dir=str(cache_dir))
    assert any(line.startswith("decoding 48 images") for line in lines)
    assert first.cache and os.path.dirname(first.cache) == str(cache_dir)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr("trainjob.data.folders.decode_all", no_decoding)
    second, lines = load(data, cache_dir=str(cache_dir))
    assert f"cache hit: {first.cache} (decoding skipped)" in lines
    assert torch.equal(second.train.inputs, first.train.inputs) and second.classes == first.classes
    monkeypatch.undo()

    changed = data / "train" / "cat" / "cat_000.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(changed)
    third, lines = load(data, cache_dir=str(cache_dir))
    assert not any(line.startswith("cache hit") for line in lines) and third.cache != first.cache
    assert not list(cache_dir.glob(".tmp-*")), "no temp files left behind"


def test_cache_off_and_cache_inside_the_data_folder(tmp_path):
    datagen.write_image_folders(tmp_path)
    ds, _ = load(tmp_path, cache_dir="off")
    assert ds.cache is None
    ds, lines = load(tmp_path, cache_dir=str(tmp_path / "cache"))
    assert ds.cache is None and any("inside the data folder" in line for line in lines)


def test_bad_files_are_skipped_and_counted(tmp_path):
    datagen.write_image_folders(tmp_path)
    cat = tmp_path / "train" / "cat"
    (cat / "empty.png").write_bytes(b"")
    (cat / "notes.jpg").write_text("this is not a picture")
    good = (cat / "cat_000.png").read_bytes()
    (cat / "cut.png").write_bytes(good[: len(good) // 2])
    (cat / "readme.txt").write_text("hello")
    (cat / "bomb.png").write_bytes(datagen.png_claiming_size(20_000, 20_000))
    (cat / "big.png").write_bytes(datagen.png_claiming_size(9_000, 9_000))  # 81 MP: PIL only warns; we skip it
    os.symlink("loop.png", cat / "loop.png")
    ds, lines = load(tmp_path)
    reasons = {os.path.basename(s["path"]): s["reason"] for s in ds.skipped}
    assert reasons == {
        "empty.png": "empty file",
        "notes.jpg": "not an image (format not recognised)",
        "cut.png": "corrupt or truncated image",
        "readme.txt": "not an image file extension",
        "bomb.png": "too large (over 64 megapixels, possible decompression bomb)",
        "big.png": "too large (over 64 megapixels, possible decompression bomb)",
        "loop.png": "symlink loop",
    }
    assert all(s["path"].startswith(os.path.join("train", "cat", "")) for s in ds.skipped)
    assert len(ds.train) == 36 and "7 skipped files" in lines[-2]
    assert lines[-1].startswith("skipped 7 unreadable files: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_skipped(tmp_path):
    datagen.write_image_folders(tmp_path)
    (tmp_path / "train" / "cat" / "cat_000.png").chmod(0)
    ds, _ = load(tmp_path)
    assert ds.skipped == [{"path": os.path.join("train", "cat", "cat_000.png"), "reason": "permission denied"}]


def test_permission_denied_is_skipped_even_as_root(tmp_path, monkeypatch):
    datagen.write_image_folders(tmp_path)
    locked = str(tmp_path / "train" / "dog" / "dog_003.png")
    real_open = preprocess.Image.open

    def open_as_unprivileged_user(path, *args, **kwargs):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(preprocess.Image, "open", open_as_unprivileged_user)
    ds, _ = load(tmp_path)
    assert ds.skipped == [{"path": os.path.join("train", "dog", "dog_003.png"), "reason": "permission denied"}]


def test_class_without_a_readable_image_fails(tmp_path):
    datagen.write_image_folders(tmp_path)
    for f in (tmp_path / "train" / "dog").iterdir():
        f.write_bytes(b"")
    message = load_error(tmp_path)
    assert message.startswith("class folder train/dog/ has no readable image (12 files skipped, e.g. ")
    assert "(empty file)" in message


def test_train_and_test_classes_must_match(tmp_path):
    datagen.write_image_folders(tmp_path)
    shutil.rmtree(tmp_path / "test" / "ship")
    (tmp_path / "test" / "bird").mkdir()
    message = load_error(tmp_path)
    assert "train/ and test/ must hold the same class folders" in message
    assert "only in train/: ['ship'], only in test/: ['bird']" in message


def test_class_with_a_single_image_stays_in_train(tmp_path):
    datagen.write_image_folders(tmp_path, split=None, per_class_train=3, per_class_test=1)
    for f in sorted((tmp_path / "ship").iterdir())[1:]:
        f.unlink()
    ds, lines = load(tmp_path)
    assert torch.bincount(ds.train.labels).tolist() == [3, 3, 1]
    assert "class 'ship' has a single readable image: kept in train, so the test set has none of it" in lines


def test_non_utf8_names_do_not_crash(tmp_path):
    datagen.write_image_folders(tmp_path, split=None)
    root = os.fsencode(tmp_path)
    os.rename(os.path.join(root, b"cat"), os.path.join(root, b"caf\xe9"))
    good = os.path.join(root, b"caf\xe9", b"cat_000.png")
    os.rename(good, os.path.join(root, b"caf\xe9", b"na\xefve.png"))
    with open(os.path.join(root, b"dog", b"bro\xffken.png"), "wb") as f:
        f.write(b"not a png")
    ds, lines = load(tmp_path)
    assert ds.classes == ["caf\\xe9", "dog", "ship"]
    assert ds.skipped == [{"path": "dog/bro\\xffken.png", "reason": "not an image (format not recognised)"}]
    assert len(ds.train) + len(ds.test) == 48
    "\n".join(lines).encode("utf-8")  # every log line can be printed


def test_parallel_decoding_matches_in_process(tmp_path, monkeypatch):
    datagen.write_image_folders(tmp_path, modes=("RGB", "L", "P"), extensions=(".png", ".jpg"))
    serial, _ = load(tmp_path)
    monkeypatch.setattr(decode, "PARALLEL_MIN_FILES", 0)
    monkeypatch.setattr(progress, "IMAGE_LINES_EVERY_S", 0.0)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    lines = []
    images, failures = decode.decode_all([str(p) for p in sorted(tmp_path.rglob("*.*"))], 32, lines.append, workers=2)
    assert images.shape == (48, 3, 32, 32) and failures == {}
    assert lines and lines[0].startswith("decoding images: 16/48 (")
    parallel, _ = load(tmp_path)
    assert torch.equal(parallel.train.inputs, serial.train.inputs)


def _die(paths, size):
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer, or a crash in a C decoder, does to a worker


def _slow(paths, size):
    time.sleep(2)
    return np.zeros((len(paths), 3, size, size), np.uint8), []


def _many_files(tmp_path, n=300) -> list[str]:
    for i in range(n):
        (tmp_path / f"{i:04d}.png").write_bytes(b"x")  # never opened: the workers are replaced
    return sorted(str(p) for p in tmp_path.iterdir())


def test_a_decode_worker_that_dies_is_a_one_line_data_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "decode_chunk", _die)  # forked workers inherit the patched module
    with pytest.raises(DataError, match="an image decoding process died") as info:
        decode.decode_all(_many_files(tmp_path), 16, lambda line: None, workers=2)
    assert "\n" not in str(info.value)
    _no_workers_left()


def _no_workers_left(within_s: float = 5.0) -> None:
    """The pool's workers are gone (the executor's own thread may still be reaping one that was being replaced)."""
    deadline = time.monotonic() + within_s
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []


def test_sigterm_during_parallel_decoding_stops_at_once_and_ends_the_workers(tmp_path, monkeypatch):
    """Eight chunks of 2 s on two workers would take 8 s to drain; a stop must not wait for them."""
    from trainjob.errors import Stopped
    from trainjob.signals import StopRequest

    monkeypatch.setattr(decode, "decode_chunk", _slow)
    stop = StopRequest().install()
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    try:
        with pytest.raises(Stopped):
            decode.decode_all(_many_files(tmp_path), 16, lambda line: None, workers=2)
    finally:
        stop.uninstall()
    took = time.monotonic() - started - 0.5
    print(f"SIGTERM during parallel decoding: stopped after {took:.2f} s")
    assert took < 5.0, took  # well inside Docker's 10 s, where draining the queue takes 8 s
    _no_workers_left()


def test_a_same_size_rewrite_with_its_mtime_restored_is_not_served_from_the_cache(tmp_path):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    datagen.write_image_folders(data)
    first, _ = load(data, cache_dir=str(cache_dir))
    target = data / "train" / "cat" / "cat_000.png"
    before = target.stat()
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    buffer = tmp_path / "red.png"
    red.save(buffer)
    payload = buffer.read_bytes()
    payload = payload + b"\0" * max(0, before.st_size - len(payload))  # PNG ignores trailing bytes
    if len(payload) != before.st_size:
        pytest.skip("the generated image is larger than the one it replaces")
    target.write_bytes(payload)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as they were
    second, lines = load(data, cache_dir=str(cache_dir))
    assert not any(line.startswith("cache hit") for line in lines), "stale pixels served from the cache"
    assert second.cache != first.cache


@pytest.mark.parametrize("spoil", ["not a zip", "truncated", "wrong shapes", "missing arrays"])
def test_a_malformed_cache_file_is_decoded_again_not_trusted(tmp_path, spoil):
    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    datagen.write_image_folders(data)
    first, _ = load(data, cache_dir=str(cache_dir))
    path = Path(first.cache)
    if spoil == "not a zip":
        path.write_bytes(b"garbage")
    elif spoil == "truncated":  # what a full disk or a killed copy leaves
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        if spoil == "wrong shapes":
            arrays["labels"] = arrays["labels"][:3]
        else:
            del arrays["splits"]
        np.savez(path, **arrays)  # the right key, wrong contents
    again, lines = load(data, cache_dir=str(cache_dir))
    assert not any(line.startswith("cache hit") for line in lines)
    assert torch.equal(again.train.inputs, first.train.inputs)


@pytest.mark.parametrize("name, payload", [
    ("postscript.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n0 0 moveto 32 32 lineto stroke\n"),
    ("photoshop.png", b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03\x00\x00\x00\x20\x00\x00\x00\x20\x00\x08\x00\x03"),
    ("icon.webp", b"\x00\x00\x01\x00\x01\x00\x20\x20\x00\x00\x01\x00\x20\x00" + b"\x00" * 64),  # an .ico
])
def test_only_the_formats_the_extensions_name_are_decoded(tmp_path, monkeypatch, name, payload):
    """PIL picks a decoder by content: a PostScript file named .jpg would reach Ghostscript, which runs it."""
    from PIL import EpsImagePlugin

    def never(*args, **kwargs):
        raise AssertionError("a foreign decoder was used")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", never)
    datagen.write_image_folders(tmp_path)
    (tmp_path / "train" / "cat" / name).write_bytes(payload)
    ds, _ = load(tmp_path)
    assert {os.path.basename(s["path"]): s["reason"] for s in ds.skipped} == {
        name: "not an image (format not recognised)"}


# The one keyed .npz store behind both the decoded-image cache and the transfer recipe's features.
KEY, OTHER_KEY = "a" * 24 + "1" * 40, "a" * 24 + "2" * 40  # same file names, different keys


@pytest.mark.parametrize("spoil", ["another key", "truncated", "no rows"])
def test_the_feature_store_refuses_a_chunk_of_another_key_cut_short_or_without_rows(tmp_path, spoil):
    from trainjob.features import FeatureStore

    rows = np.arange(3200, dtype=np.float16).reshape(32, 100)
    store = FeatureStore(KEY, tmp_path, cache_dir=None)
    store.save_chunk(0, {"rows": rows})
    assert np.array_equal(store.load_chunk(0)["rows"], rows) and "key" not in store.load_chunk(0)
    path = store.chunk_path(0)
    if spoil == "another key":
        store = FeatureStore(OTHER_KEY, tmp_path, cache_dir=None)
        assert store.chunk_path(0) == path
    elif spoil == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        store.save_chunk(0, {"pixels": rows})
    assert store.load_chunk(0) is None


def test_the_image_cache_refuses_another_keys_file(tmp_path):
    from trainjob.data import cache

    data, cache_dir = tmp_path / "data", tmp_path / "cache"
    datagen.write_image_folders(data)
    first, _ = load(data, cache_dir=str(cache_dir))
    path = Path(first.cache)
    with np.load(path) as npz:
        key = str(npz["key"])
    assert cache.load(path, key) is not None
    assert cache.load(path, key[:-1] + ("0" if key[-1] != "0" else "1")) is None


def test_a_cache_that_cannot_be_written_is_a_log_line_not_an_error(tmp_path):
    from trainjob.data import cache
    from trainjob.features import FeatureStore

    lines = []
    missing = tmp_path / "gone"  # no such folder: the write fails as on a cache folder removed mid-run
    assert not cache.save(missing / "images.npz", {"images": np.zeros(1)}, KEY, lines.append)
    FeatureStore(KEY, tmp_path, cache_dir=missing).save_finished({"rows": np.zeros(1)}, lines.append)
    assert lines[0].startswith(f"cache: could not write {missing / 'images.npz'} (")
    assert lines[0].endswith("); the next run decodes again")
    assert lines[1].startswith(f"cache: could not write {missing}/features-") and lines[1].endswith("extracts again")
    assert len(lines) == 2, "no 'features cached' line for a cache that was not written"


def test_extraction_stores_chunks_of_32_but_runs_the_network_in_smaller_passes(tmp_path):
    """features.py: a chunk (the stored unit) goes through encode pass_images at a time, rows in the images' order."""
    import torch

    from trainjob.data.dataset import Dataset, Split
    from trainjob.environment import Distributed
    from trainjob.features import CHUNK, FeatureExtractor

    passes = []

    def encode(x):
        passes.append(len(x))
        return x.mean(dim=(2, 3))

    pixels = torch.randint(0, 256, (70, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dataset = Dataset(train=Split(pixels[:45], torch.zeros(45, dtype=torch.long)),
                      test=Split(pixels[45:], torch.zeros(25, dtype=torch.long)), classes=["a"], format="synthetic",
                      source="generated", test_split="test")
    extractor = FeatureExtractor(encode, lambda p: p.float(), image_size=4, settings="mean colour",
                                 chunk_dir=tmp_path, cache_dir=None, d=Distributed(), log=lambda _line: None,
                                 pass_images=8)
    found = extractor.for_dataset(dataset)
    assert passes == [8, 8, 8, 8, 8, 5] + [8, 8, 8, 1], "chunks of 32 (45 = 32 + 13, 25), each in passes of 8"
    assert torch.equal(found.train.inputs, pixels[:45].float().mean(dim=(2, 3)).to(torch.float16))
    assert len(list(extractor.store.chunk_dir.glob("chunk-*.npz"))) == 1 and CHUNK == 32  # the test split's one chunk
