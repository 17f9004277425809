"""Model and weights files of every kind, through the real CLI: --weights that is a folder, a device, a FIFO, a
terabyte or a pickle that calls code (under a --weights_sha256 that matches it); a model.pt whose classes do not
match its head, with NaN weights, or asking for a 1.6 GB network; and a model.pt replaced under a running server.
Each is one line and exit 2, or for the server: it goes on answering with the model it loaded.
"""

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from cli_runner import REPO, assert_user_error, cli_env, run_train
from datagen import ShellPayload, write_image_folders
from loopback import free_port
from serving import Server, request

TIMEOUT = 90  # s: each case ends in a second or two; a read that never ends fails here rather than hanging the suite


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    """The tutorial's net trained one epoch on synthetic data (10 classes, 32x32): seconds, and a real model.pt."""
    out = tmp_path_factory.mktemp("demo") / "o"
    result = run_train("--demo", "--epochs", "1", "--output_dir", out, "--progress", "off")
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "model.pt"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    folder = write_image_folders(tmp_path_factory.mktemp("img"), classes=("a",), per_class_train=1, split=None)
    return next(folder.rglob("*.png"))


def _edited(model: Path, target: Path, edit) -> Path:
    saved = torch.load(model, weights_only=True)
    edit(saved)
    torch.save(saved, target)
    return target


# --- --weights ----------------------------------------------------------------------------------------------------
def _transfer(tmp_path: Path, *flags, env=None):
    data = write_image_folders(tmp_path / "data", classes=("red", "green"), per_class_train=3, per_class_test=1)
    return run_train("--recipe", "transfer", "--data_path", data, "--output_dir", tmp_path / "o", "--progress", "off",
                     *flags, env=env, timeout=TIMEOUT)


def _fifo(tmp_path: Path, endless: bool) -> Path:
    fifo = tmp_path / "given.pt"
    os.mkfifo(fifo)
    if endless:  # a writer that streams zeros for as long as anyone reads
        def stream():
            try:
                with open(fifo, "wb") as w:
                    while True:
                        w.write(bytes(1 << 16))
            except OSError:  # the reader went away
                pass

        threading.Thread(target=stream, daemon=True).start()
    return fifo


def _release(fifo: Path) -> None:
    """Let a writer still waiting in open() through (a reader opens and leaves at once), so no thread stays behind."""
    if fifo.is_fifo():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))


def _sparse(tmp_path: Path) -> Path:
    big = tmp_path / "given.pt"
    with open(big, "wb") as f:
        f.truncate(1 << 40)  # 1 TB that takes no disk: hashing it would take hours
    return big


@pytest.mark.parametrize("what, make, phrase", [
    ("a folder", lambda t: t, "is a folder"),
    ("/dev/zero", lambda t: Path("/dev/zero"), "is not a regular file"),
    ("a FIFO nobody writes", lambda t: _fifo(t, endless=False), "is not a regular file"),
    ("a FIFO that never ends", lambda t: _fifo(t, endless=True), "is not a regular file"),
    ("a 1 TB sparse file", _sparse, "1,099,512 MB, more than any weights file (512 MB at most)"),
])
def test_weights_that_are_no_file_of_weights_are_refused_before_a_byte_is_read(tmp_path, what, make, phrase):
    weights = make(tmp_path)
    try:
        result = _transfer(tmp_path, "--weights", weights)
    finally:
        _release(tmp_path / "given.pt")
    line = assert_user_error(result, str(weights), phrase, "efficientnet-lite0-57934424.pth")
    assert line in (tmp_path / "o" / "failure.txt").read_text()


@pytest.mark.parametrize("what, content, phrase", [
    ("a pickle that calls code", lambda marker: {"conv.weight": ShellPayload(marker)},
     "a pickle that would call posix.system, which trainjob never runs"),
    ("a list of tensors", lambda marker: [torch.zeros(2)], "hold a list, not a state dict"),
    ("numbers for names", lambda marker: {1: torch.zeros(2)}, "hold a dict, not a state dict (names to tensors)"),
])
def test_weights_the_user_vouches_for_by_sha256_still_load_only_as_tensors(tmp_path, what, content, phrase):
    """--weights_sha256 says the file is the one the user meant, not that it is safe: weights_only still refuses a
    pickle's code, and what is not a state dict is one line (numbers as keys used to fail in the key mapping)."""
    marker = tmp_path / "pwned"
    weights = tmp_path / "mine.pth"
    torch.save(content(marker), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert_user_error(_transfer(tmp_path, "--weights", weights, "--weights_sha256", sha), str(weights), phrase)
    assert not marker.exists(), "the payload ran"


class _Endless(http.server.BaseHTTPRequestHandler):
    """Answers any GET with a body of zeros that never ends and no Content-Length (HTTP/1.0: the body ends when the
    connection does)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            while True:
                self.wfile.write(bytes(1 << 20))
        except OSError:  # the client hung up
            pass

    def log_message(self, *args):
        pass


def test_weights_fetch_refuses_a_download_that_never_ends_and_leaves_nothing(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_train("weights", "fetch", "resnet18", "--dir", tmp_path / "w", "--base_url",
                           f"http://127.0.0.1:{server.server_port}", timeout=TIMEOUT)
    finally:
        server.shutdown()
    assert_user_error(result, "sends more than 512 MB, more than any backbone's weights")
    assert list((tmp_path / "w").iterdir()) == [], "the partial download was left behind"


# --- model.pt -----------------------------------------------------------------------------------------------------
def _nan(saved):
    saved["state_dict"]["fc3.bias"][3] = float("nan")


def _inf(saved):
    saved["state_dict"]["conv1.weight"].view(-1)[0] = float("inf")


BAD_MODELS = {
    "one class short": (lambda s: s.update(classes=s["classes"][:-1]), "names 9 classes but its head scores 10"),
    "one class too many": (lambda s: s.update(classes=s["classes"] + ["extra"]), "names 11 classes but its head"),
    "a NaN weight": (_nan, "holds NaN or infinite weights (fc3.bias)"),
    "an infinite weight": (_inf, "holds NaN or infinite weights (conv1.weight)"),
}


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_model_that_would_score_wrongly_is_refused_by_every_command(demo_model, image, tmp_path, case, command):
    """Before: a short class list crashed predict --top 10 with an IndexError, a long one named classes the head
    never scores, and NaN weights printed 'pattern_0 nan%'."""
    edit, phrase = BAD_MODELS[case]
    model = _edited(demo_model, tmp_path / "model.pt", edit)
    args = {"predict": [image, "--top", "10"], "evaluate": [image.parent.parent], "export": []}[command]
    assert_user_error(run_train(command, model, *args, timeout=TIMEOUT), str(model), phrase)
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "evaluation").exists()


def _nan_onnx(demo_model: Path, target: Path) -> Path:
    """A model.onnx with a NaN weight, as `train export` wrote them before it checked (load_model now refuses)."""
    from trainjob.export import write_onnx
    from trainjob.inference import load_model

    model, saved = load_model(str(demo_model))
    with torch.no_grad():
        model.fc3.bias[3] = float("nan")
    write_onnx(model, saved, str(demo_model), target)
    return target


def test_predict_never_writes_nan_scores_from_an_onnx_file(demo_model, image, tmp_path):
    pytest.importorskip("onnxruntime")
    model = _nan_onnx(demo_model, tmp_path / "model.onnx")
    out = tmp_path / "p.csv"
    assert_user_error(run_train("predict", model, image, "--output", out, timeout=TIMEOUT), "gives NaN scores",
                      "retrain")
    assert "nan" not in (out.read_text() if out.exists() else "")


@pytest.mark.parametrize("what, make, phrase", [
    ("/dev/zero", lambda t: Path("/dev/zero"), "is not a regular file"),
    ("a FIFO nobody writes", lambda t: _fifo(t, endless=False), "is not a regular file"),
    ("a 1 TB sparse file", _sparse, "more than any model file"),
])
def test_a_model_path_that_is_no_file_is_refused_with_the_export_cache_on(tmp_path, image, what, make, phrase):
    """With the cache on (the default), predict hashes the model file to find its ONNX export before loading it:
    that read hung on /dev/zero, a FIFO and a terabyte."""
    model = make(tmp_path)
    env = cli_env(TRAINJOB_CACHE_DIR=str(tmp_path / "cache"))
    try:
        result = run_train("predict", model, image, env=env, timeout=TIMEOUT)
    finally:
        _release(tmp_path / "given.pt")
    assert_user_error(result, str(model), phrase)


def test_a_model_asking_for_a_network_bigger_than_its_file_is_refused_before_it_is_built(demo_model, tmp_path):
    """The fast recipe's net with widths of 3,000 is 1.6 GB of weights a 250 kB file cannot hold: refused from its
    shapes alone. Before, the network was allocated and initialised first, and only then did its weights not fit."""
    def huge(saved):
        saved.update(arch="fastnet", arch_kwargs={"num_classes": 10, "image_size": 32, "widths": [3000] * 3,
                                                  "bn_momentum": 0.6, "bn_eps": 1e-12, "logit_scale": 1.0})

    model = _edited(demo_model, tmp_path / "model.pt", huge)
    # The peak's growth across load_model alone (the network module imported first): what the imports reach varies
    # with the environment, the 1.6 GB a built network would add does not.
    probe = ("import resource, sys\nfrom trainjob.errors import UserError\nfrom trainjob.inference import load_model\n"
             "import trainjob.models\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    load_model(sys.argv[1])\nexcept UserError as e:\n    print(e)\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    result = subprocess.run([sys.executable, "-c", probe, str(model)], cwd=REPO, env=cli_env(), capture_output=True,
                            text=True, timeout=TIMEOUT)
    message, peak_mb = result.stdout.splitlines()
    assert "describes 1,62" in message and "MB of weights but holds 0.3 MB" in message, message
    assert int(peak_mb) < 500, f"peak RSS grew {peak_mb} MB: the network was allocated"


# --- train serve ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["a NaN weight", "one class short"])
def test_serve_refuses_a_model_that_would_answer_wrongly_before_it_listens(demo_model, tmp_path, case):
    pytest.importorskip("azureml_inference_server_http")
    edit, phrase = BAD_MODELS[case]
    model = _edited(demo_model, tmp_path / "model.pt", edit)
    assert_user_error(run_train("serve", model, "--port", str(free_port()), timeout=TIMEOUT), phrase)


def test_endpoint_mode_with_a_nan_model_stops_with_the_reason_instead_of_serving(demo_model, tmp_path):
    """As a managed online endpoint runs it (AZUREML_MODEL_DIR, the inference server with score.py): init's one line
    is in the log, the worker fails to boot and the server exits 3, so the deployment fails rather than answer NaN."""
    pytest.importorskip("azureml_inference_server_http")
    from trainjob import score

    registered = tmp_path / "models" / "m" / "1"
    registered.mkdir(parents=True)
    _edited(demo_model, registered / "model.pt", _nan)
    env = cli_env(AZUREML_MODEL_DIR=str(tmp_path / "models"), WORKER_COUNT="1")
    env.pop("TRAINJOB_MODEL", None)
    port = free_port()
    launch = ("import sys\nfrom azureml_inference_server_http import amlserver\namlserver.DEFAULT_HOST = '127.0.0.1'\n"
              f"sys.argv = ['azmlinfsrv', '--entry_script', {score.__file__!r}, '--port', '{port}']\namlserver.run()")
    result = subprocess.run([sys.executable, "-c", launch], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT)
    log = result.stdout + result.stderr
    assert result.returncode == 3, log[-3000:]
    assert "holds NaN or infinite weights (fc3.bias)" in log and "Worker failed to boot" in log, log[-3000:]


def _scores(server, image: Path):
    status, body = request(server.url + "/score?top=10", image.read_bytes())
    assert status == 200, body
    return body


def test_a_model_replaced_under_a_running_server_changes_nothing_until_restart(demo_model, image, tmp_path):
    """The server loads model.pt once, when it starts: replaced atomically (a new training run's os.replace) or cut
    short in place (a copy still being written), the file is not read again; every answer is the loaded model's,
    never a 500. Restarting the server is how a new model.pt is served (docs/serving.md)."""
    pytest.importorskip("azureml_inference_server_http")
    model = tmp_path / "served" / "model.pt"
    model.parent.mkdir()
    shutil.copy(demo_model, model)
    rename = lambda s: s.update(classes=[f"new_{c}" for c in s["classes"]])  # noqa: E731
    with Server(model) as server:
        before, description = _scores(server, image), request(server.url + "/score")[1]
        assert [c["class"] for c in before["top"]] and all(c["class"].startswith("pattern_") for c in before["top"])
        os.replace(_edited(demo_model, tmp_path / "renamed.pt", rename), model)  # as a training run writes model.pt
        assert _scores(server, image) == before
        with open(model, "r+b") as f:  # in place: what a copy still under way leaves
            f.truncate(100)
        assert _scores(server, image) == before
        assert request(server.url + "/score")[1] == description
    # Restarted, it loads what is there now: the cut file is refused in one line before the server listens ...
    assert_user_error(run_train("serve", model, "--port", str(free_port()), timeout=TIMEOUT), str(model),
                      "is not a model.pt written by trainjob")
    # ... and a whole new model.pt is served.
    os.replace(_edited(demo_model, tmp_path / "renamed.pt", rename), model)
    with Server(model) as server:
        assert all(c["class"].startswith("new_pattern_") for c in _scores(server, image)["top"])
