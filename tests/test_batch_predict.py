"""`train predict` on folders and lists, to a CSV or JSON Lines file: every row, resumable, safe, refusals in one
line. The real CLI on generated images; the model is the tutorial one trained by the session fixture."""

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import REPO, assert_user_error, cli_env, run_train

from trainjob.batch.predictions import header


@pytest.fixture(scope="module")
def model(trained_models) -> Path:
    return trained_models["tutorial"]


@pytest.fixture
def photos(trained_models, tmp_path) -> Path:
    """The fixture's 48 images in nested folders, plus a file that is not an image and a hidden one."""
    root = tmp_path / "new"
    for path in sorted(Path(trained_models["data"]).rglob("*.*")):
        target = root / path.relative_to(trained_models["data"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / ".hidden.png").write_bytes(b"x")
    (root / "notes.txt").write_text("not scored: not an image extension")
    return root


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def printed_classes(model: Path, images: list[Path]) -> dict[str, str]:
    result = run_train("predict", model, *images, "--json", "--top", "1")
    assert result.returncode == 0, result.stderr
    return {json.loads(line)["image"]: json.loads(line)["top"][0]["class"] for line in result.stdout.splitlines()}


def test_a_folder_becomes_one_csv_row_per_image_with_the_same_classes_as_printing(model, photos, tmp_path):
    out = tmp_path / "predictions.csv"
    result = run_train("predict", model, photos, "--output", out, "--top", "2")
    assert result.returncode == 0, result.stderr
    rows = csv_rows(out)
    images = sorted(p for p in photos.rglob("*.*") if p.suffix in (".png", ".jpg") and not p.name.startswith("."))
    assert sorted(r["path"] for r in rows) == sorted(map(str, images))
    assert list(rows[0]) == header(2)
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert broken and broken[0]["error"] and not broken[0]["class_1"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 48 and all(0 <= float(r["probability_2"]) <= float(r["probability_1"]) <= 1 for r in good)
    assert {r["path"]: r["class_1"] for r in good} == printed_classes(model, [Path(r["path"]) for r in good])
    assert "scored 48 images" in result.stdout and "skipped 1 unreadable" in result.stdout
    assert "images/s" in result.stdout.splitlines()[-1]


def test_a_list_file_and_stdin_name_the_images(model, photos, tmp_path):
    chosen = sorted(p for p in photos.rglob("*.png") if not p.name.startswith("."))[:5]
    listing = photos / "list.txt"
    listing.write_text("# chosen\n" + "\n".join(str(p.relative_to(photos)) for p in chosen) + "\n\n")
    out = tmp_path / "p.jsonl"
    result = run_train("predict", model, "--from", listing, "--output", out)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(photos / p.relative_to(photos)) for p in chosen]
    assert all(r["error"] is None and len(r["top"]) == 3 for r in rows)
    piped = subprocess.run([sys.executable, "-m", "trainjob", "predict", str(model), "--from", "-", "--json"],
                           input="\n".join(map(str, chosen)), capture_output=True, text=True, env=cli_env(), cwd=REPO,
                           timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(line)["top"][0]["class"] for line in piped.stdout.splitlines()] == \
        [r["top"][0]["class"] for r in rows]


def test_a_rerun_continues_an_interrupted_file_without_duplicates(model, photos, tmp_path):
    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    assert run_train("predict", model, photos, "--output", whole).returncode == 0
    text = whole.read_text()
    cut.write_text(text[:len(text) // 2])  # as a kill mid-write leaves it: the last line unfinished
    assert not cut.read_text().endswith("\n")
    result = run_train("predict", model, photos, "--output", cut)
    assert result.returncode == 0, result.stderr
    assert "already in" in result.stdout
    assert sorted(cut.read_text().splitlines()) == sorted(text.splitlines())
    again = run_train("predict", model, photos, "--output", cut)
    assert again.returncode == 0 and cut.read_text().count("\n") == text.count("\n")
    assert "scored 0 images" in again.stdout


def test_sigterm_stops_within_two_seconds_with_whole_rows_and_a_rerun_finishes(model, trained_models, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    sources = sorted(Path(trained_models["data"]).rglob("*.png"))
    for i in range(6000):  # hard links: thousands of files for the price of a few
        os.link(sources[i % len(sources)], many / f"{i:05d}.png")
    out = tmp_path / "p.csv"
    cmd = [sys.executable, "-m", "trainjob", "predict", str(model), str(many), "--output", str(out), "--chunk", "8"]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 50) and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 143, stderr
    assert took < 2.0, took
    assert "stopped by SIGTERM" in stderr and "every finished row is in" in stderr
    text = out.read_text()
    assert text.endswith("\n") and 50 < text.count("\n") < 6001
    assert subprocess.run(cmd, env=cli_env(), cwd=REPO, capture_output=True, timeout=300).returncode == 0
    paths = [r["path"] for r in csv_rows(out)]
    assert len(paths) == len(set(paths)) == 6000


def test_two_runs_on_one_output_file_do_not_interleave(model, photos, tmp_path):
    out = tmp_path / "p.csv"
    out.write_text(",".join(header(3)) + "\n")
    with open(out, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running train predict holds it
        result = run_train("predict", model, photos, "--output", out)
    assert_user_error(result, "being written by another train predict")
    assert out.read_text() == ",".join(header(3)) + "\n"


@pytest.mark.parametrize("case", ["not-a-model", "other-csv", "other-top", "txt-output", "missing-in-list",
                                  "no-images", "missing-path", "jsonl-garbage"])
def test_bad_input_is_one_line_exit_2_and_nothing_is_overwritten(case, model, photos, tmp_path):
    out, args, before = tmp_path / "p.csv", [photos], None
    if case == "not-a-model":
        (tmp_path / "model.pt").write_text("weights? no")
        model = tmp_path / "model.pt"
        phrase = "is not a model.pt written by trainjob"
    elif case == "other-csv":
        out.write_text("name,score\nalice,3\n")
        phrase = "is not a predictions file"
    elif case == "other-top":
        assert run_train("predict", model, photos, "--output", out, "--top", "2").returncode == 0
        phrase = "with --top 3"
    elif case == "txt-output":
        out = tmp_path / "p.txt"
        out.write_text("keep me")
        phrase = "expected a .csv or .jsonl"
    elif case == "missing-in-list":
        (tmp_path / "list.txt").write_text(f"{next(photos.rglob('*.png'))}\n{photos / 'gone.png'}\n")
        args = ["--from", tmp_path / "list.txt"]
        phrase = "no file or folder at"
    elif case == "no-images":
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        (tmp_path / "empty" / "sub" / "a.txt").write_text("x")
        args = [tmp_path / "empty"]
        phrase = "no image files to score"
    elif case == "missing-path":
        args = [tmp_path / "nowhere"]
        phrase = "no file or folder at"
    else:
        out = tmp_path / "p.jsonl"
        out.write_text('{"path": "a.png", "top": []}\nnot json\n')
        phrase = "is not a predictions file"
    if out.exists():
        before = out.read_bytes()
    result = run_train("predict", model, *args, "--output", out)
    assert_user_error(result, phrase)
    assert (out.read_bytes() if out.exists() else None) == before


def test_a_transfer_model_scores_in_onnxruntime_exported_once_into_the_cache(trained_models, tmp_path):
    """auto: onnxruntime for transfer models (measured twice PyTorch's speed), the export kept in the cache folder and
    reused; the same classes as PyTorch in the same arithmetic (fp32); without a cache, PyTorch."""
    model, data, cache = trained_models["transfer"], trained_models["data"], tmp_path / "cache"
    env = cli_env(TRAINJOB_CACHE_DIR=str(cache))

    def predict(name: str, *flags, environment=env):
        result = run_train("predict", model, data, "--output", tmp_path / name, *flags, env=environment)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout, {r["path"]: r["class_1"] for r in csv_rows(tmp_path / name)}

    first, exported = predict("first.csv")
    assert first.startswith("exporting") and "onnxruntime, fp32, exported from" in first.splitlines()[-1]
    assert len(list(cache.glob("model-*.onnx"))) == 1
    again, _ = predict("again.csv")
    assert not again.startswith("exporting") and "onnxruntime" in again.splitlines()[-1]
    torch_out, in_torch = predict("torch.csv", "--engine", "torch", "--precision", "fp32")
    assert "torch, fp32" in torch_out.splitlines()[-1] and in_torch == exported and len(exported) == 48
    no_cache, _ = predict("no-cache.csv", environment=cli_env())  # TRAINJOB_CACHE_DIR=off
    assert no_cache.count("\n") == 1 and "images/s; torch, " in no_cache.splitlines()[-1]
    tutorial = run_train("predict", trained_models["tutorial"], data, "--output", tmp_path / "t.csv", env=env)
    assert tutorial.returncode == 0 and "images/s; torch, fp32)" in tutorial.stdout.splitlines()[-1]
    assert_user_error(run_train("predict", model, data, "--engine", "onnxruntime", "--output", tmp_path / "x.csv"),
                      "writable cache folder")
