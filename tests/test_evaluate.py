"""`train evaluate MODEL DATA`: on the images a run tested on, the numbers of that run's summary.json; a class the
model does not know is one line. The real CLI on generated data."""

import json
from pathlib import Path

import pytest
from cli_runner import assert_user_error, run_train, summary
from datagen import write_cifar_batches, write_image_folders

RECIPES = ("tutorial", "fast", "transfer")


def evaluate(model: Path, data: Path, out: Path, *flags: str) -> dict:
    result = run_train("evaluate", model, data, "--output_dir", out, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accuracy" in result.stdout.splitlines()[-1]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "evaluation.json").read_text())


@pytest.mark.parametrize("recipe", RECIPES)
def test_evaluating_the_test_folder_gives_the_accuracy_training_reported(trained_models, recipe, tmp_path):
    model = trained_models[recipe]
    result = evaluate(model, trained_models["data"], tmp_path / "ev")
    reported = summary(model.parent)
    assert result["images"] == reported["dataset"]["test_images"] == 18
    if recipe == "transfer":  # training scored features kept in float16; the whole model here scores unrounded ones
        assert abs(result["accuracy"] - reported["test_accuracy"]) <= 1 / 18
    else:  # the same preparation, layout, precision and test-time augmentation: the same arithmetic
        assert result["accuracy"] == reported["test_accuracy"]
        assert result["per_class_accuracy"] == reported["per_class_accuracy"]
    assert len(result["misclassified"]) == result["images"] - result["correct"]
    assert all(m["true"] != m["predicted"] and m["path"].startswith("test/") for m in result["misclassified"])
    assert sum(map(sum, result["confusion_matrix"])) == 18


def test_split_test_redraws_the_share_training_held_out(tmp_path):
    data = write_image_folders(tmp_path / "d", per_class_train=20, split=None)
    (data / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")  # skipped before the draw, in both
    out = tmp_path / "run"
    trained = run_train("--data_path", data, "--output_dir", out, "--epochs", "2", "--val_fraction", "0.25",
                        "--seed", "7")
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = evaluate(out / "model.pt", data, tmp_path / "ev", "--split", "test")
    assert result["images"] == summary(out)["dataset"]["test_images"]
    assert result["accuracy"] == summary(out)["test_accuracy"]
    assert result["skipped_files"] == 1 and "seed 7" in result["split"]
    everything = evaluate(out / "model.pt", data, tmp_path / "all")
    assert everything["images"] == 72 and everything["split"].startswith("every image")


def test_cifar_batches_are_evaluated_on_test_batch(tmp_path):
    data = write_cifar_batches(tmp_path / "cifar", n_train=60, n_test=30)
    out = tmp_path / "run"
    assert run_train("--data_path", data, "--output_dir", out, "--epochs", "1").returncode == 0
    result = evaluate(out / "model.pt", data, tmp_path / "ev")
    assert result["images"] == 30 and result["accuracy"] == summary(out)["test_accuracy"]
    assert result["misclassified"][0]["path"].startswith("test_batch:")


def test_a_class_the_model_does_not_know_is_named(trained_models, tmp_path):
    data = write_image_folders(tmp_path / "d", classes=("cat", "horse"), per_class_train=2, split=None)
    result = run_train("evaluate", trained_models["tutorial"], data, "--output_dir", tmp_path / "ev")
    assert_user_error(result, "classes the model was not trained on: horse")
    assert not (tmp_path / "ev").exists()


def test_an_unwritable_output_folder_is_one_line(trained_models, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    result = run_train("evaluate", trained_models["tutorial"], trained_models["data"], "--output_dir",
                       tmp_path / "file" / "ev")
    assert_user_error(result, "cannot write to")
