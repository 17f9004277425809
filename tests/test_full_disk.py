"""A full disk at any moment: every write that meets ENOSPC is exit 2 with one line naming the folder and the space
the file needed, leaves no half-written file under its name, keeps the earlier files, and a rerun after space is
freed completes. Caches are the exception: a cache that does not fit is one line and the run carries on.

The disk is a real tmpfs of a few MB, mounted for each test (root only, as CI runs; skipped elsewhere). It is filled
with a file of the right size either before the run or, for the moments inside a training run, just before (or
after) a named file is written: the run in this process, the filler written when trainjob's atomic writer creates
that file's temporary file. The ENOSPC itself is always the kernel's.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import REPO, assert_one_error_line, cli_env, run_train
from datagen import write_image_folders

from trainjob import atomic, cli

NEEDS = re.compile(r"it needs ([\d.]+) (bytes|kB|MB|GB)")
UNITS = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


class Disk:
    """A tmpfs mounted at path; fill() leaves `room` bytes free, release() frees them again."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / ".filler"

    def free(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, room: int = 0) -> None:
        with open(self.filler, "ab") as f:
            while self.free() > room:  # again if something else took space meanwhile
                try:
                    os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size + self.free() - room)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise

    def release(self) -> None:
        self.filler.unlink()


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()} (a container without CAP_SYS_ADMIN)")
    try:
        yield Disk(mount)
    finally:  # lazily where a process the test started still holds a file there: never leave a mount behind
        if subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """3 classes: 30 training and 12 test images."""
    return write_image_folders(tmp_path_factory.mktemp("photos"), per_class_train=10, per_class_test=4)


def fill_at(monkeypatch, disk: Disk, name: str, nth: int = 1, room: int = 0, after: bool = False, then=None):
    """Fill disk (leaving room bytes) just before the nth atomic write of a file called name starts, or with after
    just after it is in place; then(): called at that moment."""
    seen = []

    def moment(filename: str) -> None:
        if filename == name:
            seen.append(filename)
            if len(seen) == nth:
                if then:
                    then()
                disk.fill(room)

    if after:
        move = atomic.move

        def moved(src, dst):
            move(src, dst)
            moment(Path(dst).name)

        monkeypatch.setattr(atomic, "move", moved)
    else:
        mkstemp = atomic.tempfile.mkstemp

        def made(*args, prefix="", **kwargs):
            moment(prefix[1:-1])  # atomic_write's prefix: ".<name>."
            return mkstemp(*args, prefix=prefix, **kwargs)

        monkeypatch.setattr(atomic.tempfile, "mkstemp", made)
    return seen


def train(capsys, data: Path, out: Path, *flags) -> tuple[int, str, str]:
    """`train` in this process: (exit code, stdout, stderr)."""
    argv = ["--data_path", data, "--output_dir", out, "--epochs", "2", "--progress", "off", *flags]
    if "--cache_dir" not in flags:
        argv += ["--cache_dir", "off"]
    code = cli.run([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def needed(line: str) -> float:
    number, unit = NEEDS.search(line).groups()
    return float(number) * UNITS[unit]


def assert_full_disk_line(code: int, err: str, name: str, folder: Path) -> str:
    line = assert_one_error_line(code, err, "no space left on the device while writing", f"{name} in {folder}:",
                                 "it needs", "free some space")
    assert NEEDS.search(line), line
    return line


def assert_whole_results(out: Path, epochs: int = 2) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["history"]) == epochs
    assert torch.load(out / "model.pt", weights_only=True)["state_dict"]
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["type"] == "epoch" for line in lines) == epochs
    return summary


# --- training: the results, a checkpoint, metrics.jsonl ---------------------------------------------------------------
@pytest.mark.parametrize("name, room", [("model.pt", 0), ("model.pt", 64_000), ("summary.json", 0),
                                        ("training_curves.png", 0), ("confusion_matrix.png", 20_000)])
def test_a_full_disk_while_writing_a_result_keeps_the_earlier_one_and_a_rerun_completes(
        disk, photos, capsys, monkeypatch, name, room):
    """The same command again over a finished run rewrites its results: the disk fills up as `name` is written (with
    room: part of it is written first)."""
    out = disk.path / "out"
    assert train(capsys, photos, out)[0] == 0
    earlier = (out / name).read_bytes()
    fill_at(monkeypatch, disk, name, room=room)
    code, _, err = train(capsys, photos, out)
    line = assert_full_disk_line(code, err, name, out)
    assert (out / name).read_bytes() == earlier
    assert not temp_files(disk.path)
    disk.release()
    assert train(capsys, photos, out)[0] == 0
    assert_whole_results(out)
    assert needed(line) == pytest.approx((out / name).stat().st_size, rel=0.2)


@pytest.mark.parametrize("room", [0, 200_000])
def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint_and_a_rerun_resumes(
        disk, photos, capsys, monkeypatch, room):
    out = disk.path / "out"
    checkpoints = out / "checkpoints"
    good = {}
    # At the second checkpoint the first one has just become previous.pt.
    fill_at(monkeypatch, disk, "latest.pt", nth=2, room=room,
            then=lambda: good.update(bytes=(checkpoints / "previous.pt").read_bytes()))
    code, _, err = train(capsys, photos, out)
    assert_full_disk_line(code, err, "latest.pt", checkpoints)
    assert (checkpoints / "previous.pt").read_bytes() == good["bytes"]
    assert torch.load(checkpoints / "previous.pt", weights_only=True)["position"]["epoch"] == 1
    assert not (checkpoints / "latest.pt").exists() and not temp_files(disk.path)
    disk.release()
    code, _, err = train(capsys, photos, out)
    assert code == 0, err
    assert assert_whole_results(out)["resumed_from"] == str(checkpoints / "previous.pt")


def test_a_full_disk_while_logging_metrics_leaves_whole_lines_and_a_rerun_resumes(disk, photos, capsys, monkeypatch):
    """Epoch 1 logs 30 loss lines (~3 kB of metrics.jsonl's first 4 kB page); the disk fills once its checkpoint is
    written, so a loss line of epoch 2 is the first write that needs a new page."""
    out = disk.path / "out"
    flags = ("--batch_size", "1", "--log_interval", "1")
    fill_at(monkeypatch, disk, "latest.pt", after=True)
    code, _, err = train(capsys, photos, out, *flags)
    line = assert_full_disk_line(code, err, "metrics.jsonl", out)
    assert "more" in line  # an append: what the line being added needs
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(row) for row in text.splitlines()]
    disk.release()
    code, _, err = train(capsys, photos, out, *flags)
    assert code == 0, err
    assert_whole_results(out)


def test_a_run_that_starts_on_a_full_disk_says_so_in_one_line(disk, photos, capsys):
    out = disk.path / "out"
    disk.fill()
    code, _, err = train(capsys, photos, out)
    assert_full_disk_line(code, err, ".lock", out)
    disk.release()
    assert train(capsys, photos, out)[0] == 0


@pytest.mark.slow
def test_sigterm_on_a_full_disk_is_one_line_and_a_rerun_completes(disk, tmp_path):
    """The checkpoint a stop writes meets the full disk: one line, exit 2, never a traceback."""
    data = write_image_folders(tmp_path / "data", per_class_train=50, per_class_test=4)
    out = disk.path / "out"
    cmd = [sys.executable, "-m", "trainjob", "--data_path", str(data), "--output_dir", str(out), "--epochs", "40",
           "--progress", "off"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
        while not (metrics.exists() and metrics.stat().st_size) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGSTOP)  # mid-training: fill the disk, then the stop arrives
        while proc.poll() is None and Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "T":
            time.sleep(0.01)
        disk.fill()
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert_one_error_line(proc.returncode, stderr, "no space left on the device while writing", "it needs")
    assert not temp_files(disk.path)
    disk.release()
    done = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout
    assert_whole_results(out, epochs=40)


# --- caches: a cache that does not fit is one line, and the run carries on -------------------------------------------
def test_a_full_cache_folder_is_one_line_and_the_run_carries_on(disk, photos, tmp_path, capsys):
    cache = disk.path / "cache"
    other = write_image_folders(tmp_path / "other", per_class_train=2, per_class_test=1)
    assert train(capsys, other, tmp_path / "o1", "--cache_dir", cache)[0] == 0
    (earlier,) = cache.glob("images-*.npz")  # another dataset's entry, made before the disk filled up
    before = earlier.read_bytes()
    disk.fill(room=16_000)  # the 32-pixel images need ~130 kB
    code, out, err = train(capsys, photos, tmp_path / "o2", "--cache_dir", cache)
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if line.startswith("cache: ")]
    assert f"cache: no space left in {cache} for images-" in line and "carrying on without it" in line
    assert needed(line) > 100_000
    assert earlier.read_bytes() == before and len(list(cache.glob("images-*.npz"))) == 1
    assert not temp_files(disk.path)
    disk.release()
    code, out, err = train(capsys, photos, tmp_path / "o3", "--cache_dir", cache)
    assert code == 0 and "cache written" in out, err
    code, out, err = train(capsys, photos, tmp_path / "o4", "--cache_dir", cache)
    assert code == 0 and "cache hit" in out, err


TRANSFER = ("--recipe", "transfer", "--image_size", "64", "--epochs", "2")


@pytest.mark.slow
def test_transfer_features_a_full_disk_stops_the_extraction_and_a_rerun_takes_it_up(disk, photos, capsys,
                                                                                       monkeypatch):
    """42 images are two chunks of features in checkpoints/: the disk fills as the second is written."""
    out = disk.path / "out"
    fill_at(monkeypatch, disk, "chunk-000001.npz")
    code, _, err = train(capsys, photos, out, *TRANSFER)
    (features,) = (out / "checkpoints").glob("features-*")
    assert_full_disk_line(code, err, "chunk-000001.npz", features)
    assert [p.name for p in features.iterdir()] == ["chunk-000000.npz"]
    assert not temp_files(disk.path)
    disk.release()
    code, stdout, err = train(capsys, photos, out, *TRANSFER)
    assert code == 0, err
    assert "1 of 2 chunks already extracted" in stdout


@pytest.mark.slow
def test_transfer_features_a_full_cache_folder_is_one_line_and_the_run_carries_on(disk, photos, tmp_path, capsys):
    cache = disk.path / "cache"
    disk.fill()
    code, out, err = train(capsys, photos, tmp_path / "out", *TRANSFER, "--cache_dir", cache)
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if line.startswith("cache: ")]
    assert f"cache: no space left in {cache} for features-" in line and "extracts again" in line
    assert not list(cache.glob("features-*")) and not temp_files(disk.path)


# --- train export and train predict ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    done = run_train("--data_path", photos, "--output_dir", out, "--epochs", "1", "--progress", "off")
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "model.pt"


@pytest.mark.slow
def test_export_on_a_full_disk_keeps_the_earlier_onnx_file(disk, model):
    onnx = disk.path / "model.onnx"
    onnx.write_bytes(b"an earlier export")
    disk.fill(room=20_000)  # the tutorial net's ONNX file is ~250 kB
    done = run_train("export", model, "--output", onnx)
    line = assert_full_disk_line(done.returncode, done.stderr, "model.onnx", disk.path)
    assert onnx.read_bytes() == b"an earlier export" and not temp_files(disk.path)
    disk.release()
    done = run_train("export", model, "--output", onnx)
    assert done.returncode == 0, done.stderr
    assert needed(line) == pytest.approx(onnx.stat().st_size, rel=0.05)


@pytest.mark.slow
def test_predict_output_on_a_full_disk_keeps_whole_rows_and_a_rerun_completes(disk, model, tmp_path):
    """150 images are ~10 kB of rows, in chunks of 16: with one 4 kB page free, a chunk in the middle meets ENOSPC."""
    images = write_image_folders(tmp_path / "many", per_class_train=50, per_class_test=0) / "train"
    output = disk.path / "predictions.csv"
    disk.fill(room=4096)
    done = run_train("predict", model, images, "--output", output)
    line = assert_one_error_line(done.returncode, done.stderr, "no space left on the device while writing",
                                 f"predictions.csv in {disk.path}:", "it needs", "more")
    assert "run the same command again (it goes on after the rows written)" in line
    text = output.read_text()
    written = text.count("\n") - 1
    assert text.endswith("\n") and 0 < written < 150, written
    assert all(len(row.split(",")) == len(text.splitlines()[0].split(",")) for row in text.splitlines())
    disk.release()
    done = run_train("predict", model, images, "--output", output)
    assert done.returncode == 0, done.stderr
    paths = [row.split(",")[0] for row in output.read_text().splitlines()[1:]]
    assert len(paths) == len(set(paths)) == 150


@pytest.mark.slow
def test_predict_onnx_cache_on_a_full_disk_scores_in_pytorch_instead(disk, model, photos):
    cache = disk.path / "cache"
    cache.mkdir()
    disk.fill()
    done = run_train("predict", model, photos / "test", "--engine", "onnxruntime", "--json",
                     env=cli_env(TRAINJOB_CACHE_DIR=str(cache)))
    assert done.returncode == 0, done.stderr
    assert f"scoring in PyTorch instead: no space left in {cache} for the ONNX export (it needs" in done.stderr
    assert len(done.stdout.splitlines()) == 12 and not list(cache.glob("*.onnx")) and not temp_files(cache)
    assert np.isfinite([json.loads(row)["top"][0]["probability"] for row in done.stdout.splitlines()]).all()
