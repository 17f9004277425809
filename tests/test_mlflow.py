"""MLflow in the trainer, checked against a real `mlflow server` that this module starts on loopback.

Nothing is mocked: the trainer runs as a user runs it, with MLFLOW_TRACKING_URI pointing at the server, and the
tests read back what arrived through MLflow's own client.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import REPO, cli_env, run_train, summary
from loopback import free_port, start_listening

from trainjob import mlflow_log

mlflow = pytest.importorskip("mlflow")  # a dev dependency (make venv): its absence in CI would be a broken venv
from mlflow.tracking import MlflowClient  # noqa: E402

RUN = ["--demo", "--epochs", "2", "--log_interval", "400", "--progress", "off", "--num_threads", "1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite store and a local artifact store; its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = start_listening([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                            "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
                            "--artifacts-destination", str(root / "artifacts")],
                           port, root / "server.log", "mlflow server", cwd=root, start_new_session=True)
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def runs_named(client: MlflowClient, experiment: str, name: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    return client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")


@pytest.mark.slow
def test_a_local_run_logs_params_step_losses_epoch_and_final_accuracy_and_artifacts(tmp_path, server):
    out = tmp_path / "first-run"
    env = cli_env(MLFLOW_TRACKING_URI=server, MLFLOW_EXPERIMENT_NAME="trainjob-test")
    result = run_train(*RUN, "--learning_rate", "0.003", "--momentum", "0.92", "--output_dir", out, env=env)
    assert result.returncode == 0, result.stderr
    assert "MLflow: logging to run" in result.stdout

    s = summary(out)
    assert s["mlflow"]["status"] == "logged" and s["mlflow"]["tracking_uri"] == server
    client = MlflowClient(server)
    [run] = runs_named(client, "trainjob-test", "first-run")
    assert run.info.run_id == s["mlflow"]["run_id"]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["learning_rate"] == "0.003" and params["momentum"] == "0.92" and params["recipe"] == "tutorial"
    assert params["epochs"] == "2" and params["batch_size"] == "4"
    assert run.data.tags["trainjob.recipe"] == "tutorial"

    # 5,000 demo images in batches of 4: 1,250 steps an epoch, a loss every 400: 3 an epoch, the tutorial's lines.
    losses = client.get_metric_history(run.info.run_id, "loss")
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in logged if m["type"] == "loss"]
    assert len(losses) == len(logged) == 6
    assert [m.step for m in losses] == [m["global_step"] for m in logged]
    assert [m.value for m in losses] == pytest.approx([m["loss"] for m in logged])
    accuracy = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert [m.step for m in accuracy] == [1, 2]
    assert [m.value for m in accuracy] == pytest.approx([h["test_accuracy"] for h in s["history"]])
    for name in ("train_loss", "images_per_second"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2]
    assert run.data.metrics["final_test_accuracy"] == pytest.approx(s["test_accuracy"])

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", "summary.json", "metrics.jsonl", "training_curves.png", "confusion_matrix.png"} <= artifacts
    model = Path(client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / "download")))
    assert model.read_bytes() == (out / "model.pt").read_bytes()


@pytest.mark.slow
def test_a_run_stopped_and_resumed_continues_its_mlflow_run(tmp_path, server):
    out = tmp_path / "resumed-run"
    env = cli_env(MLFLOW_TRACKING_URI=server, MLFLOW_EXPERIMENT_NAME="trainjob-test")
    proc = subprocess.Popen([sys.executable, "-m", "trainjob", *RUN, "--output_dir", str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1:"):
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    client = MlflowClient(server)
    [stopped] = runs_named(client, "trainjob-test", "resumed-run")
    assert stopped.info.status == "KILLED"

    result = run_train(*RUN, "--output_dir", out, env=env)
    assert result.returncode == 0, result.stderr
    [run] = runs_named(client, "trainjob-test", "resumed-run")  # the same run, not a second one
    assert run.info.run_id == stopped.info.run_id == summary(out)["mlflow"]["run_id"]
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_accuracy")] == [1, 2]


def test_an_unreachable_tracking_server_costs_a_warning_and_a_summary_line_not_the_training(tmp_path):
    out = tmp_path / "o"
    uri = f"http://user:secret-pass@127.0.0.1:{free_port()}"  # nothing listens there
    result = run_train("--demo", "--epochs", "1", "--progress", "off", "--output_dir", out,
                       env=cli_env(MLFLOW_TRACKING_URI=uri))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: MLflow")]
    assert len(warnings) == 1 and "training goes on" in warnings[0], result.stdout
    assert "secret-pass" not in result.stdout + result.stderr
    s = summary(out)
    assert s["mlflow"]["status"].startswith("not logged: could not connect")
    assert "secret-pass" not in json.dumps(s["mlflow"]) and s["mlflow"]["tracking_uri"].startswith("http://***@")
    assert (out / "model.pt").is_file() and s["test_accuracy"] > 0.5


@pytest.mark.parametrize("tracking, uri, in_v1_run, expected", [
    ("auto", None, False, False),  # no server named
    ("auto", "http://127.0.0.1:5000", False, True),  # a user's own server
    ("auto", "azureml://eastus.api.azureml.ms/mlflow/v1.0/x", False, True),  # an SDK v2 job
    ("auto", "azureml://eastus.api.azureml.ms/mlflow/v1.0/x", True, False),  # SDK v1: Run.log covers that run
    ("mlflow", "azureml://eastus.api.azureml.ms/mlflow/v1.0/x", True, True),
    ("both", None, False, True),  # asked for: start() then warns that the URI is missing
    ("azureml", "http://127.0.0.1:5000", False, False),
    ("none", "http://127.0.0.1:5000", False, False),
])
def test_tracking_choice(tracking, uri, in_v1_run, expected):
    environ = {"MLFLOW_TRACKING_URI": uri} if uri else {}
    assert mlflow_log.wanted(tracking, environ, in_azureml_v1_run=in_v1_run) is expected


def test_credentials_in_the_tracking_uri_are_never_shown():
    assert mlflow_log.shown("https://u:p%40ss@mlflow.example.com:8443/x") == "https://***@mlflow.example.com:8443/x"
    assert mlflow_log.shown("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mlflow_log.shown("azureml://eastus.api.azureml.ms/mlflow/v1.0/sub") == \
        "azureml://eastus.api.azureml.ms/mlflow/v1.0/sub"
