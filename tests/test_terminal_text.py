"""Text from data and model files never runs in the user's terminal: class names, file names and paths found on
disk reach stdout and stderr escaped (\\x1b, \\n), in every command and in its errors, while the JSON and CSV
files keep the exact strings. The real CLI on a model file whose class names are terminal escapes."""

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from cli_runner import REPO, assert_user_error, cli_env, run_train
from datagen import write_image_folders
from PIL import Image

from trainjob.text import printable

ESC = "\x1b"
TITLE = "\x1b]0;pwned\x07"  # sets the terminal window's title
CLEAR = "\x1b[2J"  # clears the screen
MATH = "$x^$"  # Matplotlib's mathtext, which cannot parse it
CLASSES = ["cat", "dog", TITLE, CLEAR, MATH]
ODD_NAME = f"a\nb{CLEAR}.png"  # a newline forges a log line; the escape clears the screen


def hostile_model(path: Path, classes: list[str] = CLASSES) -> Path:
    """A model.pt as `train` writes one (the tutorial's net, 32 px), whose class names are terminal escapes."""
    from trainjob.models import build_model

    model = build_model("net", num_classes=len(classes), image_size=32)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"arch": "net", "arch_kwargs": {"num_classes": len(classes), "image_size": 32},
                "state_dict": model.state_dict(), "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
                "classes": classes, "image_size": 32, "recipe": "tutorial"}, path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(("plain.png", ODD_NAME)):
        Image.new("RGB", (40, 30), (40 * i, 90, 200)).save(folder / name, format="PNG")
    (folder / f"broken{TITLE}.png").write_bytes(b"\x89PNG not really")
    return folder


def assert_no_escape(result: subprocess.CompletedProcess) -> None:
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        assert ESC not in text and "\x07" not in text, (stream, text[-2000:])


def test_printable_escapes_control_characters_once_and_keeps_other_text():
    assert printable(TITLE) == "\\x1b]0;pwned\\x07"
    assert printable(ODD_NAME) == "a\\nb\\x1b[2J.png"
    assert printable("\u202egnp.exe") == "\\u202egnp.exe"  # a bidi override reverses what follows on screen
    assert printable(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"  # a name in Latin-1, not UTF-8
    assert printable("\ud800") == "\\ud800"  # a lone surrogate a pickled string may hold
    assert printable("chat noir, 猫 é") == "chat noir, 猫 é"
    assert printable(printable(TITLE + ODD_NAME)) == printable(TITLE + ODD_NAME)


def test_predict_prints_class_and_file_names_escaped(tmp_path, images):
    model = hostile_model(tmp_path / "m" / "model.pt")
    result = run_train("predict", model, images, "--top", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_escape(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines  # one per file: the newline in a name forges no line
    assert any(line.startswith("a\\nb\\x1b[2J.png: ") for line in lines), lines
    assert all("\\x1b]0;pwned\\x07" in line for line in lines if "cannot read" not in line), lines
    assert any(line.startswith("broken\\x1b]0;pwned\\x07.png: cannot read") for line in lines), lines


def test_predict_json_and_csv_keep_the_exact_strings(tmp_path, images):
    model = hostile_model(tmp_path / "m" / "model.pt")
    printed = run_train("predict", model, images, "--top", "5", "--json")
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert_no_escape(printed)  # json.dumps writes ESC as \u001b: exact once parsed, harmless on a terminal
    rows = [json.loads(line) for line in printed.stdout.splitlines()]
    assert {Path(r["image"]).name for r in rows} == {"plain.png", ODD_NAME, f"broken{TITLE}.png"}
    assert all({t["class"] for t in r["top"]} == set(CLASSES) for r in rows if r["top"])

    written = run_train("predict", model, images, "--top", "5", "--output", tmp_path / "p.csv")
    assert written.returncode == 0, written.stderr[-2000:]
    assert_no_escape(written)
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert {Path(r["path"]).name for r in table} == {"plain.png", ODD_NAME, f"broken{TITLE}.png"}
    assert {r["class_1"] for r in table} <= set(CLASSES) | {""}
    assert {r[f"class_{i}"] for r in table if r["class_1"] for i in range(1, 6)} == set(CLASSES)


def test_errors_quoting_paths_found_on_disk_are_escaped(tmp_path, images):
    """Two model.pt files under the folder given as MODEL: the error lists the paths it found, from disk."""
    hostile_model(tmp_path / "runs" / f"one{TITLE}" / "model.pt")
    hostile_model(tmp_path / "runs" / f"two{CLEAR}" / "model.pt")
    for command in (["predict", tmp_path / "runs", images], ["evaluate", tmp_path / "runs", images],
                    ["export", tmp_path / "runs" / f"three{CLEAR}" / "model.pt"]):
        result = run_train(*command)
        assert_user_error(result)
        assert_no_escape(result)
        assert "\\x1b" in result.stderr, result.stderr


def test_evaluate_shows_a_model_path_found_on_disk_escaped_and_keeps_exact_classes(tmp_path):
    """MODEL a folder: the one model.pt under it, however it is named, is printed; evaluation.json keeps the exact
    class names the model file holds."""
    hostile_model(tmp_path / "runs" / f"run{TITLE}" / "model.pt")
    data = write_image_folders(tmp_path / "data", classes=("cat", "dog"), per_class_train=2, per_class_test=3)
    result = run_train("evaluate", tmp_path / "runs", data, "--output_dir", tmp_path / "ev")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_escape(result)
    assert "run\\x1b]0;pwned\\x07" in result.stdout
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert evaluation["classes"] == CLASSES
    assert {m["predicted"] for m in evaluation["misclassified"]} <= set(CLASSES)


@pytest.mark.slow
def test_export_keeps_exact_classes_and_predict_on_the_onnx_file_prints_them_escaped(tmp_path, images):
    """ONNX metadata is data too: export writes the exact names, and predict reading them back escapes them."""
    model = hostile_model(tmp_path / f"run{CLEAR}" / "model.pt")
    exported = run_train("export", model)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert_no_escape(exported)
    assert "run\\x1b[2J" in exported.stdout
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model.with_name("model.onnx"))).metadata_props}
    assert json.loads(meta["classes"]) == CLASSES
    predicted = run_train("predict", model.with_name("model.onnx"), images, "--top", "5")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert_no_escape(predicted)
    assert "\\x1b]0;pwned\\x07" in predicted.stdout


def test_training_shows_its_output_folder_escaped(tmp_path):
    out = tmp_path / f"out{TITLE}"
    result = run_train("--demo", "--epochs", "1", "--output_dir", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_no_escape(result)
    assert "results in " + printable(str(out)) in result.stdout


@pytest.mark.parametrize("command, module", [(["--demo"], "engine"), (["predict", "model.pt", "x.png"], "predict")])
def test_a_bugs_traceback_is_escaped_too(tmp_path, command, module):
    """A bug keeps its traceback and exit 1 (here: a module of a copy of the package warns and raises as it is
    imported, quoting a file's content); the message is escaped in the traceback, the warning and failure.txt."""
    broken = tmp_path / "site"
    shutil.copytree(REPO / "src" / "trainjob", broken / "trainjob")
    (broken / "trainjob" / f"{module}.py").write_text(f"import warnings\nwarnings.warn('glyph ' + {CLEAR!r})\n"
                                                     f"raise RuntimeError({TITLE!r} + ' ' + {CLEAR!r})\n")
    where = ["--output_dir", tmp_path / "o"] if module == "engine" else []
    result = run_train(*command, *where, env=cli_env(PYTHONPATH=str(broken)))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" in result.stderr and "RuntimeError: \\x1b]0;pwned\\x07 \\x1b[2J" in result.stderr
    assert "UserWarning: glyph \\x1b[2J" in result.stderr
    assert_no_escape(result)
    if module == "engine":
        assert ESC not in (tmp_path / "o" / "failure.txt").read_text()
