"""The training job through its real entry points, on small generated data, checked as a user would check it."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import REPO, assert_user_error, cli_env, run_torchrun, run_train, summary, weights
from datagen import write_cifar_batches, write_cifar_tar, write_image_folders

QUICK = ["--log_interval", "25", "--progress", "lines"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    """The tutorial's data folder: it holds cifar-10-batches-py/."""
    return write_cifar_batches(tmp_path_factory.mktemp("cifar"), n_train=400, n_test=100).parent


def test_tutorial_command_from_repo_root_writes_every_output(cifar, tmp_path):
    out = tmp_path / "outputs"
    result = run_train("--data_path", cifar, "--learning_rate", "0.003", "--momentum", "0.92",
                       "--output_dir", out, "--log_interval", "50", command=[sys.executable, "src/train.py"])
    assert result.returncode == 0, result.stderr
    # The tutorial's own lines: the data listing and the loss every log interval.
    assert "LIST FILES IN DATA PATH..." in result.stdout and "['cifar-10-batches-py']" in result.stdout
    assert "[1,    50] loss:" in result.stdout
    s = summary(out)
    assert s["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert s["config"]["learning_rate"] == 0.003 and s["config"]["momentum"] == 0.92
    assert s["epochs"] == 2 and s["config"]["batch_size"] == 4
    assert set(s["per_class_accuracy"]) == {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                            "horse", "ship", "truck"}
    assert s["train_seconds"] > 0 and s["images_per_second"] > 0
    assert s["dataset"]["format"] == "cifar-batches" and s["dataset"]["train_images"] == 400
    for name in ("model.pt", "metrics.jsonl", "training_curves.png", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "failure.txt").exists()
    model = torch.load(out / "model.pt", weights_only=True)
    assert model["classes"][0] == "airplane" and model["arch"] == "net"
    assert model["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["type"] == "loss"] == [50, 100, 50, 100]
    assert [m["epoch"] for m in lines if m["type"] == "epoch"] == [1, 2]


def test_tutorial_command_from_inside_src_as_azure_ml_runs_it(cifar, tmp_path):
    """Azure ML runs a snapshot of src/ with src/ as the working directory."""
    result = run_train("--data_path", cifar, "--output_dir", tmp_path / "o", "--epochs", "1", *QUICK,
                       cwd=REPO / "src", command=[sys.executable, "train.py"])
    assert result.returncode == 0, result.stderr
    assert summary(tmp_path / "o")["epochs"] == 1


def test_same_seed_same_result(cifar, tmp_path):
    runs = [run_train("--data_path", cifar, "--output_dir", tmp_path / n, "--epochs", "1", "--seed", "7", *QUICK)
            for n in ("a", "b")]
    assert all(r.returncode == 0 for r in runs)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tar_gz_only_read_in_place_from_a_read_only_folder(tmp_path):
    data = write_cifar_tar(tmp_path / "data", n_train=200, n_test=50).parent
    os.chmod(data, 0o555)  # mounts are read-only: nothing may be extracted next to the archive
    try:
        result = run_train("--data_path", data, "--output_dir", tmp_path / "o", "--epochs", "1", *QUICK)
    finally:
        os.chmod(data, 0o755)
    assert result.returncode == 0, result.stderr
    assert summary(tmp_path / "o")["dataset"]["format"] == "cifar-tar"
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-python.tar.gz"]


def test_environment_variables_stand_in_for_flags_and_flags_win(cifar, tmp_path):
    env = cli_env(DATA_PATH=str(cifar), OUTPUT_DIR=str(tmp_path / "from-env"))
    assert run_train("--epochs", "1", *QUICK, env=env).returncode == 0
    assert (tmp_path / "from-env" / "summary.json").exists()
    assert run_train("--epochs", "1", "--output_dir", tmp_path / "flag", *QUICK, env=env).returncode == 0
    assert (tmp_path / "flag" / "summary.json").exists()


def test_image_folders_with_mixed_modes_train_and_predict(tmp_path):
    data = write_image_folders(tmp_path / "pets", classes=("cat", "dog", "ship"), per_class_train=40,
                               per_class_test=10, modes=("RGB", "L", "RGBA", "P", "I;16"), size=(40, 28))
    out = tmp_path / "o"
    result = run_train("--data_path", data, "--output_dir", out, "--epochs", "4", "--log_interval", "10",
                       command=[str(REPO / ".venv/bin/train")] if (REPO / ".venv/bin/train").exists() else None)
    assert result.returncode == 0, result.stderr
    s = summary(out)
    assert s["dataset"]["classes"] == ["cat", "dog", "ship"] and s["dataset"]["image_size"] == [32, 32]
    assert s["test_accuracy"] > 0.5  # chance is 1/3
    images = sorted((data / "test" / "dog").iterdir())[:2]
    predicted = run_train("predict", out / "model.pt", *images, "--json")
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert all(len(r["top"]) == 3 and abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-4 for r in rows)


def test_demo_is_labelled_synthetic(tmp_path):
    result = run_train("--demo", "--epochs", "1", "--output_dir", tmp_path, *QUICK, "--log_interval", "500")
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC" in result.stdout
    s = summary(tmp_path)
    assert s["dataset"]["synthetic"] is True and s["dataset"]["format"] == "synthetic"
    assert s["test_accuracy"] > 0.5


def test_help_shows_every_default():
    result = run_train("--help")
    assert result.returncode == 0
    for flag in ("--data_path", "--learning_rate", "--momentum", "--epochs", "--batch_size", "--seed",
                 "--output_dir", "--log_interval", "--model", "--image_size", "--width", "--num_threads", "--device"):
        assert flag in result.stdout, flag
    assert "default: 0.001" in result.stdout and "default: 0.9" in result.stdout and "(default: 2000)" in result.stdout
    assert "(default: None)" not in result.stdout  # recipe-decided flags name their default in words


# Bad values are also in test_hostile_input.py's corpus (run in-process, earlier outputs kept); these run the real
# process end to end.
@pytest.mark.parametrize("args, phrases", [
    (["--learning_rate", "-1"], ["--learning_rate must be a positive number", "-1"]),
    (["--epochs", "two"], ["--epochs", "invalid int value"]),
    (["--no_such_flag"], ["unrecognized arguments: --no_such_flag"]),
    (["--recipe", "magic"], ["unknown --recipe 'magic'"]),
    (["--image_size", "64"], ["--model net takes 32x32 images"]),
    (["--width", "32"], ["--width sets the fast recipe's net", "--recipe tutorial", "add --recipe fast"]),
    (["--recipe", "fast", "--width", "2"], ["--width must be between 4 and 512", "2"]),
    (["--precision", "bf16"], ["--precision bf16 applies to --recipe fast and transfer", "trains in fp32"]),
])
def test_bad_flags_exit_2_with_one_line_and_failure_txt(cifar, tmp_path, args, phrases):
    out = tmp_path / "o"
    out.mkdir()
    result = run_train("--data_path", cifar, "--output_dir", out, *args)
    line = assert_user_error(result, *phrases)
    assert (out / "failure.txt").read_text().strip() == line


def test_no_dataset_says_how_to_give_one(tmp_path):
    assert_user_error(run_train("--output_dir", tmp_path), "--data_path", "--demo")


def test_unwritable_output_folder(cifar, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_user_error(run_train("--data_path", cifar, "--output_dir", blocker / "out"),
                      "cannot write to the output folder", "--output_dir")


def test_internal_error_keeps_traceback_and_exit_1(cifar, tmp_path):
    """A bug (here: a recipe module that cannot import) is exit 1 with a traceback and failure.txt."""
    broken = tmp_path / "site"
    shutil.copytree(REPO / "src" / "trainjob", broken / "trainjob")
    (broken / "trainjob" / "engine.py").write_text("raise RuntimeError('boom')\n")
    env = cli_env(PYTHONPATH=str(broken))
    result = run_train("--data_path", cifar, "--output_dir", tmp_path / "o", env=env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "boom" in result.stderr
    assert "internal error: RuntimeError: boom" in (tmp_path / "o" / "failure.txt").read_text()


@pytest.mark.slow
def test_two_processes_under_torchrun(cifar, tmp_path):
    out = tmp_path / "o"
    result = run_torchrun("--data_path", cifar, "--output_dir", out, "--epochs", "3", "--learning_rate", "0.01",
                          "--log_interval", "25")
    assert result.returncode == 0, result.stderr[-3000:]
    s = summary(out)
    assert s["world_size"] == 2 and s["test_accuracy"] > 0.3  # chance is 0.1
    # Each rank trains a disjoint half: 200 images / batch 4 = 50 steps per epoch per rank.
    assert s["history"][0]["steps_per_epoch"] == 50
    assert result.stdout.count("Finished Training") == 1  # only rank 0 logs


def test_progress_lines_show_a_readable_speed_when_steps_are_slow(monkeypatch, capsys):
    from trainjob import progress as shown

    clock = iter([0.0, 60.0])  # start, then an update a minute later
    monkeypatch.setattr(shown.time, "monotonic", lambda: next(clock))
    progress = shown.Progress("lines", enabled=True, every=30.0)
    progress.start(epoch=0, epochs=8, total=98, done=0)
    progress.update(25)  # 25 steps in 60 s: 2.4 s a step, which '0 steps/s' used to hide
    assert "epoch 1/8: 25/98 steps (26%), 2.4 s/step, about 175 s left" in capsys.readouterr().out
    assert shown.speed(2.5) == "2.5 steps/s" and shown.speed(1234.4) == "1234 steps/s"


@pytest.mark.parametrize("what, make, phrase", [
    ("a folder", lambda t: t, "is a folder"),
    ("a text file", lambda t: (t / "notes.pt").write_text("not a model") and t / "notes.pt", "is not a model.pt"),
    ("a zip that is no model", lambda t: _zip(t / "fake.pt"), "is not a model.pt"),
])
def test_predict_given_something_else_than_a_model_is_one_line(tmp_path, what, make, phrase):
    image = write_image_folders(tmp_path / "img", classes=("a",), per_class_train=1, split=None)
    result = run_train("predict", make(tmp_path), next(image.rglob("*.png")))
    assert_user_error(result, phrase)


def _zip(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    return path


def test_an_output_folder_inside_the_data_folder_is_refused(tmp_path):
    data = write_image_folders(tmp_path / "data", classes=("a", "b"), per_class_train=2, split=None)
    result = run_train("--data_path", data, "--output_dir", data / "outputs")
    assert_user_error(result, "is inside the data folder", "outside it")
    assert not (data / "outputs").exists(), "not even failure.txt may land in the data folder"
