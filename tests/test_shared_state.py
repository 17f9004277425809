"""Shared state between processes: two runs sharing one --cache_dir, two `train predict --output` writing one file,
`train serve --workers 4` loading one model. No corrupt cache, no interleaved rows, no crash: whichever process
loses a race waits or says so in one line.

The races are real processes. To make the interleaving certain rather than likely, the first process is paused
(SIGSTOP) at the moment it holds the shared thing (its log line says so), the second is started, and the first is
resumed (SIGCONT) once the second has shown what it does about it.
"""

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from cli_runner import REPO, assert_user_error, cli_env, run_train
from datagen import write_image_folders


class Running:
    """A `python -m trainjob ...` in the background whose output (stdout and stderr) is read as it comes."""

    def __init__(self, *args, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "trainjob", *map(str, args)], cwd=REPO,
                                     env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line with {text!r}; output: {self.output()[-3000:]}")

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def running():
    """Start Running processes through this; every one still alive at the end is killed."""
    started: list[Running] = []

    def start(*args, **kwargs) -> Running:
        started.append(Running(*args, **kwargs))
        return started[-1]

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.resume()
            process.stop()


def train_args(data: Path, out: Path, *flags) -> list:
    return ["--data_path", data, "--output_dir", out, "--epochs", "1", "--progress", "off", *flags]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def two_runs_on_one_cache(tmp_path: Path, running, data: Path, making: str, waiting: str, *flags):
    """Train into a/ and b/ with one --cache_dir: the first paused on its line `making` (holding the entry's lock),
    the second started and shown `waiting`. Returns (first, second, the cache folder, the second's waiting line)."""
    cache = tmp_path / "cache"
    env = cli_env(TRAINJOB_CACHE_DIR=str(cache))
    first = running(*train_args(data, tmp_path / "a", *flags), env=env)
    first.wait_for(making)
    first.pause()
    second = running(*train_args(data, tmp_path / "b", *flags), env=env)
    return first, second, cache, second.wait_for(waiting)


def the_one_entry(cache: Path, pattern: str) -> dict:
    """The arrays of the cache's only entry matching pattern, with no temporary file left beside it."""
    (entry,) = cache.glob(pattern)
    assert no_temp_files(cache)
    with np.load(entry, allow_pickle=False) as arrays:
        return dict(arrays)


# --- two runs sharing one --cache_dir ---------------------------------------------------------------------------------
def test_two_runs_sharing_a_cache_folder_decode_the_images_once(tmp_path, running):
    """200 images of 320 px take the first run a second or more to decode, with the cache's lock held."""
    data = write_image_folders(tmp_path / "data", per_class_train=60, per_class_test=7, size=(320, 320))
    first, second, cache, waiting = two_runs_on_one_cache(tmp_path, running, data, "decoding 201 images",
                                                          "cache: another run is decoding the same images into")
    assert waiting.endswith("; waiting for it")
    first.resume()
    assert first.finish() == 0, first.output()[-3000:]
    assert second.finish() == 0, second.output()[-3000:]
    assert "cache written" in first.output()
    assert "cache hit" in second.output() and "decoding 201 images" not in second.output()
    assert the_one_entry(cache, "images-*.npz")["images"].shape == (201, 3, 32, 32)
    summaries = [json.loads((tmp_path / out / "summary.json").read_text()) for out in ("a", "b")]
    assert summaries[0]["test_accuracy"] == summaries[1]["test_accuracy"]  # the same images, decoded once


@pytest.mark.slow
def test_two_transfer_runs_sharing_a_cache_folder_extract_the_features_once(tmp_path, running):
    data = write_image_folders(tmp_path / "data", per_class_train=30, per_class_test=4)
    first, second, cache, _ = two_runs_on_one_cache(
        tmp_path, running, data, "features: extracting 102 images",
        "features: another run is extracting the same features into", "--recipe", "transfer", "--image_size", "64")
    first.resume()
    assert first.finish() == 0, first.output()[-3000:]
    assert second.finish() == 0, second.output()[-3000:]
    assert "features cached" in first.output()
    assert "features: cache hit" in second.output() and "features: extracting" not in second.output()
    assert len(the_one_entry(cache, "features-*.npz")["rows"]) == 102


def test_a_run_waiting_on_a_cache_maker_that_dies_makes_the_entry_itself(tmp_path, running):
    """The lock dies with its holder (SIGKILL mid-decode): the waiting run decodes, and the entry is whole."""
    data = write_image_folders(tmp_path / "data", per_class_train=60, per_class_test=7, size=(320, 320))
    first, second, cache, _ = two_runs_on_one_cache(tmp_path, running, data, "decoding 201 images", "waiting for it")
    first.stop()  # SIGKILL
    assert second.finish() == 0, second.output()[-3000:]
    assert "decoding 201 images" in second.output() and "cache written" in second.output()
    assert the_one_entry(cache, "images-*.npz")["images"].shape == (201, 3, 32, 32)


# --- two train predict --output on one file ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    data = write_image_folders(tmp_path_factory.mktemp("photos"), per_class_train=10, per_class_test=4)
    out = tmp_path_factory.mktemp("model")
    done = run_train(*train_args(data, out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "model.pt"


def test_two_predicts_on_one_output_file_the_second_says_so_and_the_rows_stay_whole(tmp_path, running, model):
    images = write_image_folders(tmp_path / "images", per_class_train=100, per_class_test=0, size=(96, 96)) / "train"
    output = tmp_path / "predictions.csv"
    first = running("predict", model, images, "--output", output, "--progress", "off")
    deadline = time.monotonic() + 120
    while not (output.exists() and output.read_text().endswith("error\n")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the header is written once the file is locked
    first.pause()
    second = run_train("predict", model, images, "--output", output)
    assert_user_error(second, f"--output {output} is being written by another train predict",
                      "wait for it to finish, or pass another file")
    first.resume()
    assert first.finish() == 0, first.output()[-3000:]
    lines = output.read_text().splitlines()
    assert lines[0].startswith("path,") and len(lines) == 301
    assert all(len(line.split(",")) == len(lines[0].split(",")) for line in lines)
    assert len({line.split(",")[0] for line in lines[1:]}) == 300


# --- train serve --workers 4 ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_serve_with_four_workers_loads_the_model_in_each_and_every_worker_answers_alike(tmp_path, model):
    pytest.importorskip("azureml_inference_server_http")
    from serving import Server, request

    images = sorted((write_image_folders(tmp_path / "images", per_class_train=4, per_class_test=0) / "train")
                    .rglob("*.png"))
    expected = run_train("predict", model, *images, "--json", "--top", "3")
    assert expected.returncode == 0, expected.stderr
    want = {json.loads(line)["image"]: json.loads(line)["top"] for line in expected.stdout.splitlines()}
    with Server(model, "--workers", "4") as server:
        deadline = time.monotonic() + 180  # GET / answers once one worker is up: wait for all four to load the model
        while len(_pids(server.log(), "ready for serving traffic")) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        def score(image: Path):
            if image.name.endswith(("0.png", "2.png")):  # half as raw bytes, half as JSON
                payload = json.dumps({"images": [base64.b64encode(image.read_bytes()).decode()]}).encode()
                status, body = request(server.url + "/score", payload, "application/json")
                return image, status, body["predictions"][0] if status == 200 else body
            return image, *request(server.url + "/score", image.read_bytes(), "image/png")

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(score, images * 4))
        log = server.log()
    for image, status, body in answers:
        assert status == 200, body
        assert [t["class"] for t in body["top"]] == [t["class"] for t in want[str(image)]]
        assert [t["probability"] for t in body["top"]] == pytest.approx(
            [t["probability"] for t in want[str(image)]], abs=1e-6)
    ready, served = _pids(log, "ready for serving traffic"), _pids(log, "POST /score 200")
    assert len(ready) == 4, log[-3000:]
    assert len(served) >= 2 and served <= ready, (served, ready)  # requests were shared out, each answered alike
    assert "Traceback" not in log


def _pids(log: str, text: str) -> set[str]:
    """The worker processes that logged text: the server's lines read `... I [PID] azmlinfsrv - ...`."""
    return {line.split("[")[1].split("]")[0] for line in log.splitlines() if text in line}


@pytest.mark.slow
def test_two_predicts_of_one_model_export_it_to_onnx_once(tmp_path, running, model):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    images = write_image_folders(tmp_path / "images", per_class_train=2, per_class_test=0) / "train"
    env = cli_env(TRAINJOB_CACHE_DIR=str(tmp_path / "cache"))
    args = ("predict", model, images, "--engine", "onnxruntime", "--json")
    first = running(*args, env=env)
    first.wait_for("to ONNX once")
    first.pause()  # exporting, with the export's lock held
    second = running(*args, env=env)
    second.wait_for(f"another process is exporting {model} to")
    first.resume()
    assert first.finish() == 0, first.output()[-3000:]
    assert second.finish() == 0, second.output()[-3000:]
    assert "to ONNX once" not in second.output()
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1 and no_temp_files(tmp_path / "cache")
    rows = [[json.loads(line) for line in p.output().splitlines() if line.startswith("{")] for p in (first, second)]
    assert len(rows[0]) == 6 and rows[0] == rows[1]
