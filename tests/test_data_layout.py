"""What users see when --data_path is wrong, and the --demo data."""

import datagen
import torch
from loading import load, load_error


def test_missing_path(tmp_path):
    message = load_error(tmp_path / "nowhere")
    assert message.startswith(f"data path {tmp_path / 'nowhere'} does not exist: expected a folder holding ")
    assert "check --data_path" in message


def test_path_is_a_file(tmp_path):
    archive = datagen.write_cifar_tar(tmp_path)
    assert load_error(archive) == (f"data path {archive} is a file, expected a folder: pass the folder that "
                                   f"contains it, --data_path {tmp_path}")


def test_empty_folder(tmp_path):
    (tmp_path / ".keep").write_text("")
    message = load_error(tmp_path)
    assert message.startswith(f"data path {tmp_path} is empty (only hidden files): expected cifar-10-batches-py/")


def test_unknown_layout_lists_what_was_found_and_what_is_expected(tmp_path):
    (tmp_path / "README.txt").write_text("hello")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    message = load_error(tmp_path)
    assert message.startswith(f"no known dataset layout in {tmp_path}: found README.txt, notes/; expected ")
    for layout in ("cifar-10-batches-py/", "cifar-10-python.tar.gz", "train/<class>/", "one <class>/ folder"):
        assert layout in message


def test_dataset_one_level_down_is_pointed_at(tmp_path):
    datagen.write_image_folders(tmp_path / "nested" / "my-images")
    message = load_error(tmp_path / "nested")
    assert message.endswith(f"the dataset looks to be one level down: --data_path {tmp_path / 'nested' / 'my-images'}")


def test_single_class_folder_is_not_a_classifier(tmp_path):
    datagen.write_image_folders(tmp_path, classes=("cat",), split=None)
    assert "has 1 class folder(s) ['cat']: a classifier needs at least 2" in load_error(tmp_path)


def test_huge_listing_is_cut_short(tmp_path):
    datagen.write_cifar_batches(tmp_path)
    for i in range(60):
        (tmp_path / f"extra_{i:02d}.txt").write_text("")
    _, lines = load(tmp_path)
    assert lines[3].endswith("... and 11 more")


def test_batches_folder_preferred_over_the_archive_beside_it(tmp_path):
    datagen.write_cifar_batches(tmp_path)
    datagen.write_cifar_tar(tmp_path)
    ds, _ = load(tmp_path)
    assert ds.format == "cifar-batches"


def test_demo_data_is_generated_and_learnable(tmp_path):
    ds, lines = load(None, demo=True)
    assert lines[1].startswith("DATA PATH: none (--demo: 5000 train + 1000 test generated images")
    assert ds.synthetic and ds.format == "synthetic" and ds.source == "generated"
    assert (len(ds.train), len(ds.test), len(ds.classes)) == (5000, 1000, 10)
    assert torch.bincount(ds.train.labels).tolist() == [500] * 10
    again, _ = load(None, demo=True)
    assert torch.equal(again.train.inputs, ds.train.inputs), "same seed, same images"
    # A nearest-class-mean classifier on mean colour (3 numbers per image) already beats chance (10%) by far.
    colour = ds.train.inputs.float().mean(dim=(2, 3))  # (N, 3)
    means = torch.stack([colour[ds.train.labels == c].mean(0) for c in range(10)])  # (10, 3)
    test_colour = ds.test.inputs.float().mean(dim=(2, 3))
    predicted = torch.cdist(test_colour, means).argmin(1)
    assert (predicted == ds.test.labels).float().mean() > 0.5
