"""The trainer inside an Azure ML run: it logs through the SDK's Run object and records the run id.

Azure ML starts the trainer with AZUREML_RUN_ID, AZUREML_ARM_* and AZUREML_RUN_TOKEN set; Run.get_context() builds a
real azureml.core.run._SubmittedRun from them. Stand-ins for the service, at the seams the SDK crosses while
building that run: service discovery (ServiceContext._fetch_endpoints) and the GET of the run's record
(RunClient.get_run, answered with a RunDto). Run.log of the real Run class is replaced by a recorder, so metrics stop
there instead of being posted. A socket guard fails the test on any other connection.
"""

import json
import time
from unittest import mock

import pytest

pytestmark = [pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),  # the SDK's vendored ruamel.yaml
              pytest.mark.filterwarnings("ignore::DeprecationWarning:azureml")]  # setDaemon, imghdr in the SDK

RUN_ID = "day1-experiment-data_1700000000_0a1b2c3d"


@pytest.fixture
def azureml_run_env(monkeypatch):
    """The environment Azure ML gives a run's process, with a JWT-shaped run token (the SDK reads its expiry)."""
    jwt = pytest.importorskip("jwt")
    pytest.importorskip("azureml.core")
    token = jwt.encode({"exp": int(time.time()) + 3600}, "k" * 32, algorithm="HS256")
    env = {
        "AZUREML_RUN_ID": RUN_ID,
        "AZUREML_ARM_SUBSCRIPTION": "sub",
        "AZUREML_ARM_RESOURCEGROUP": "rg",
        "AZUREML_ARM_WORKSPACE_NAME": "ws",
        "AZUREML_ARM_PROJECT_NAME": "day1-experiment-data",
        "AZUREML_EXPERIMENT_ID": "experiment-id",
        "AZUREML_WORKSPACE_ID": "workspace-id",
        "AZUREML_RUN_TOKEN": token,
        "AZUREML_SERVICE_ENDPOINT": "https://westeurope.api.azureml.ms",
        "AZUREML_DISCOVERY_SERVICE_ENDPOINT": "https://westeurope.api.azureml.ms/discovery",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OUTPUT_DIR", "DATA_PATH"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def service_stand_ins(monkeypatch, no_network):
    from azureml._restclient.models import RunDto
    from azureml._restclient.run_client import RunClient
    from azureml._restclient.service_context import ServiceContext, _ServiceKeys
    from azureml.core import Run

    monkeypatch.setattr(ServiceContext, "_fetch_endpoints",
                        lambda self: dict.fromkeys(_ServiceKeys.get_discovery_keys(), "https://offline.invalid"))
    dto = RunDto(run_id=RUN_ID, root_run_id=RUN_ID, run_number=1, status="Running", experiment_id="experiment-id",
                 properties={}, tags={})
    monkeypatch.setattr(RunClient, "get_run", lambda self, *args, **kwargs: dto)
    logged = []

    def log(self, name, value, description="", step=None):
        logged.append((type(self).__name__, self.id, name, value))

    monkeypatch.setattr(Run, "log", log)
    return logged


def test_trainer_logs_through_the_run_and_records_its_id(azureml_run_env, service_stand_ins, tmp_path, monkeypatch):
    from datagen import write_cifar_batches

    from trainjob import cli, contract

    write_cifar_batches(tmp_path / "data", n_train=40, n_test=20)
    monkeypatch.chdir(tmp_path)  # the run's working directory: Azure ML uploads ./outputs from here
    argv = ["--data_path", str(tmp_path / "data"), "--learning_rate", "0.003", "--momentum", "0.92",
            "--epochs", "2", "--batch_size", "4", "--log_interval", "5", "--cache_dir", "off", "--progress", "off",
            "--num_threads", "1"]
    with mock.patch("sys.argv", ["train.py", *argv]):
        assert cli.run(argv) == contract.EXIT_OK

    logged = service_stand_ins
    assert {(kind, run_id) for kind, run_id, _, _ in logged} == {("_SubmittedRun", RUN_ID)}
    out = tmp_path / "outputs"  # AZUREML_RUN_ID set: ./outputs, whatever OUTPUT_DIR says
    metrics = [json.loads(line) for line in (out / contract.METRICS_FILE).read_text().splitlines()]
    losses = [m["loss"] for m in metrics if m["type"] == "loss"]
    epochs = [m for m in metrics if m["type"] == "epoch"]
    assert len(losses) >= 2 and len(epochs) == 2
    by_name = {}
    for _, _, name, value in logged:
        by_name.setdefault(name, []).append(value)
    assert by_name["loss"] == pytest.approx(losses)  # every log interval, the same values as metrics.jsonl
    for name in ("train_loss", "test_accuracy", "images_per_second"):
        assert by_name[name] == pytest.approx([e[name] for e in epochs])  # once per epoch
    summary = json.loads((out / contract.SUMMARY_FILE).read_text())
    assert by_name["final_test_accuracy"] == [pytest.approx(summary["test_accuracy"])]
    assert summary["azureml_run_id"] == RUN_ID
