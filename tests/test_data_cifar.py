"""CIFAR-10 batches as users hand them over: the tutorial's folder, the batch files alone, the tar.gz, broken files."""

import os
import pickle

import datagen
import numpy as np
import pytest
import torch
from loading import load, load_error


def test_tutorial_folder_prints_listing_and_loads_pixels_unchanged(tmp_path):
    batches = datagen.write_cifar_batches(tmp_path)
    ds, lines = load(tmp_path)
    assert lines[:5] == ["===== DATA =====", f"DATA PATH: {tmp_path}", "LIST FILES IN DATA PATH...",
                         "['cifar-10-batches-py']", "================"]
    assert "dataset: cifar-batches, 10 classes, 60 train / 30 test images (test: test_batch), 32x32 RGB, " \
           "0 skipped files" in lines
    assert ds.format == "cifar-batches" and ds.classes == datagen.CIFAR10_LABEL_NAMES
    assert ds.train.inputs.shape == (60, 3, 32, 32) and ds.train.inputs.dtype == torch.uint8
    assert ds.train.inputs.is_contiguous() and ds.train.labels.dtype == torch.int64
    assert (len(ds.train), len(ds.test)) == (60, 30)
    with open(batches / "data_batch_1", "rb") as f:
        first = pickle.load(f)
    np.testing.assert_array_equal(ds.train.inputs[0].numpy().reshape(3072), first["data"][0])  # R, G, B planes
    assert ds.train.labels[0].item() == first["labels"][0]


def test_batch_files_given_directly_with_python2_bytes_keys(tmp_path):
    datagen.write_cifar_batches(tmp_path / "str")
    datagen.write_cifar_batches(tmp_path / "bytes", bytes_keys=True, inside=False)
    reference, _ = load(tmp_path / "str")
    ds, lines = load(tmp_path / "bytes")
    assert f"layout: cifar-batches at {tmp_path / 'bytes'}" in lines
    assert ds.classes == reference.classes
    assert torch.equal(ds.train.inputs, reference.train.inputs) and torch.equal(ds.test.labels, reference.test.labels)


def test_newest_pickle_protocol_is_read_too(tmp_path):
    batches = datagen.write_cifar_batches(tmp_path / "p5")
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        with open(batches / name, "rb") as f:
            obj = pickle.load(f)
        (batches / name).write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))  # numpy via _frombuffer
    datagen.write_cifar_batches(tmp_path / "p2")
    assert torch.equal(load(tmp_path / "p5")[0].train.inputs, load(tmp_path / "p2")[0].train.inputs)


def test_tar_gz_alone_is_read_in_place(tmp_path):
    datagen.write_cifar_batches(tmp_path / "folder")
    datagen.write_cifar_tar(tmp_path / "tar")
    reference, _ = load(tmp_path / "folder")
    ds, _ = load(tmp_path / "tar")
    assert ds.format == "cifar-tar"
    assert torch.equal(ds.train.inputs, reference.train.inputs) and torch.equal(ds.test.inputs, reference.test.inputs)
    assert os.listdir(tmp_path / "tar") == ["cifar-10-python.tar.gz"], "nothing is extracted next to the archive"


def test_missing_meta_uses_cifar10_names_and_meta_sets_class_count(tmp_path):
    datagen.write_cifar_batches(tmp_path / "nometa", with_meta=False)
    datagen.write_cifar_batches(tmp_path / "three", num_classes=3)
    assert load(tmp_path / "nometa")[0].classes == datagen.CIFAR10_LABEL_NAMES
    assert load(tmp_path / "three")[0].classes == ["airplane", "automobile", "bird"]


def test_other_image_size_resizes_the_whole_tensor(tmp_path):
    datagen.write_cifar_batches(tmp_path)
    ds, lines = load(tmp_path, image_size=48)
    assert ds.train.inputs.shape == (60, 3, 48, 48) and ds.image_size == (48, 48)
    assert any("resizing CIFAR images from 32x32 to 48x48" in line for line in lines)


def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path):
    batches = datagen.write_cifar_batches(tmp_path)
    marker = tmp_path / "pwned"
    datagen.rewrite_batch(batches / "data_batch_2", data=datagen.ShellPayload(marker))
    message = load_error(tmp_path)
    assert "refusing to load" in message and "data_batch_2" in message
    assert f"asks to run {os.system.__module__}.system, which a CIFAR batch never contains" in message
    assert not marker.exists()


def test_truncated_pickle(tmp_path):
    batches = datagen.write_cifar_batches(tmp_path)
    whole = (batches / "data_batch_3").read_bytes()
    (batches / "data_batch_3").write_bytes(whole[: len(whole) // 2])
    message = load_error(tmp_path)
    assert message.startswith(f"cannot read {batches / 'data_batch_3'}:")
    assert "truncated or corrupt" in message


@pytest.mark.parametrize("changes, expected", [
    ({"labels": [12] + [0] * 11}, "label 12 is out of range: expected 0..9"),
    ({"labels": [0] * 11}, "has 12 images but 11 labels: expected one label per image"),
    ({"data": np.zeros((12, 3072), np.float32)}, "'data' is a float32 array, expected a uint8 array"),
    ({"data": np.zeros((12, 100), np.uint8)}, "'data' has shape (12, 100), expected (N, 3072)"),
])
def test_malformed_batch_contents(tmp_path, changes, expected):
    batches = datagen.write_cifar_batches(tmp_path)
    datagen.rewrite_batch(batches / "data_batch_1", **changes)
    message = load_error(tmp_path)
    assert "data_batch_1" in message and expected in message


def test_missing_test_batch(tmp_path):
    batches = datagen.write_cifar_batches(tmp_path)
    (batches / "test_batch").unlink()
    assert "has no test_batch: expected data_batch_1..5, test_batch" in load_error(tmp_path)


@pytest.mark.parametrize("member", ["cifar-10-batches-py/../../escaped", "/tmp/absolute", "link"])
def test_unsafe_tar_members_are_refused(tmp_path, member):
    archive = tmp_path / "cifar-10-python.tar.gz"
    if member == "link":
        import tarfile

        with tarfile.open(archive, "w:gz") as tar:
            info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        expected = "is a link to '/etc/passwd'"
    else:
        datagen.write_tar_members(archive, {member: b"x"})
        expected = "points outside the archive"
    message = load_error(tmp_path)
    assert message.startswith(f"refusing to read {archive}: member") and expected in message
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_tar(tmp_path, damage):
    archive = datagen.write_cifar_tar(tmp_path)
    whole = archive.read_bytes()
    archive.write_bytes(b"not a tar file at all" * 50 if damage == "garbage" else whole[: len(whole) // 2])
    message = load_error(tmp_path)
    assert message.startswith(f"cannot read {archive}") and "download it again" in message
