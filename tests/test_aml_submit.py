"""make submit-aml: the tutorial's run built from the real azureml-core objects, checked offline.

No test here reaches Azure: a socket guard fails any Python-level connection, the subprocess runs in its own network
namespace where `unshare -n` works, and each test's docstring names what stands in for the service.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # the SDK's vendored ruamel.yaml

ROOT = Path(__file__).resolve().parents[1]
AML = ROOT / "scripts" / "aml"
PY = sys.executable
TUTORIAL_ARGS = ["--data_path", "DatasetConsumptionConfig:input", "--learning_rate", "0.003", "--momentum", "0.92",
                 "--checkpoint_dir", "DatasetOutputConfig:checkpoints"]


@pytest.fixture(autouse=True)
def _no_network(no_network):
    """Every test here runs behind conftest's socket guard."""


def offline_argv(tmp_path, *more):
    return ["--dry-run", "--config", str(tmp_path / "no-config.json"), "--tag", "abc1234", *more]


def dry_run(aml, tmp_path, capsys, *more) -> dict:
    assert aml.common.run_main(aml.submit.main, offline_argv(tmp_path, *more)) == 0
    return json.loads(capsys.readouterr().out)


def without_network(cmd: list[str]) -> list[str]:
    """Run cmd in an empty network namespace when this machine allows it (root with unshare): nothing can leave."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *cmd]
    return cmd


def test_make_submit_aml_dry_run_prints_the_sdk_run_configuration(tmp_path):
    """`make submit-aml DRY_RUN=1` end to end, as a user runs it. Stand-in for the service: none is needed; the
    workspace is an SDK Workspace built with _disable_service_check and labelled offline values (no config file)."""
    cmd = without_network(["make", "--no-print-directory", "-o", ".venv/.installed", "submit-aml", "DRY_RUN=1",
                           f"PY={PY}", f"AML_ARGS=--config {tmp_path / 'none.json'} --tag abc1234"])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    rc = got["run_configuration"]

    assert got["dry_run"] is True and "offline" in got["workspace"]["source"]
    assert got["experiment"] == "day1-experiment-data"
    assert rc["target"] == "cpu-cluster"
    assert rc["script"] == "train.py" and Path(got["source_directory"]) == AML / "launcher"
    assert rc["arguments"] == TUTORIAL_ARGS
    env = rc["environment"]
    assert env["name"] == "trainjob"
    assert env["docker"]["baseImage"] == "offline-dry-run.azurecr.io/trainjob:abc1234"
    assert env["python"]["userManagedDependencies"] is True
    assert env["python"]["interpreterPath"] == "/opt/venv/bin/python"
    assert rc["docker"]["useDocker"] is True
    data = rc["data"]["input"]
    assert data["mechanism"] == "mount" and data["environmentVariableName"] == "input"
    assert data["dataLocation"]["dataset"]["id"] is None  # the service assigns it at submit
    assert got["datasets"]["input"]["paths"] == [
        "azureml://subscriptions/dry-run-subscription/resourcegroups/dry-run-resource-group/workspaces/"
        "dry-run-workspace/datastores/workspaceblobstore/paths/datasets/cifar10"]
    assert rc["framework"] == "Python" and rc["nodeCount"] == 1  # no distribution without --node-count


def test_checkpoints_go_to_a_fixed_datastore_folder_mounted_read_write(aml, tmp_path, capsys):
    """--checkpoint_dir is bound to an OutputFileDatasetConfig mounted at trainjob-checkpoints/<experiment>/<run key>
    on the datastore: the same command submitted again gets the same folder and resumes from it, another setting gets
    another. Stand-in: the offline Workspace."""
    common = aml.common

    def checkpoints(*more):
        output = dry_run(aml, tmp_path, capsys, *more)["run_configuration"]["outputData"]["checkpoints"]
        assert output["mechanism"] == "mount"  # written through as each checkpoint lands, not uploaded at the end
        return output["outputLocation"]["dataPath"]

    first = checkpoints()
    assert first["datastoreName"] == "workspaceblobstore"
    assert first == checkpoints("--wait") and first != checkpoints("--", "--epochs", "3")
    args = aml.submit.build_parser().parse_args(offline_argv(tmp_path))
    assert first["relativePath"] == f"trainjob-checkpoints/day1-experiment-data/{common.run_key(args)}"
    named = checkpoints("--run-key", "my-run", "--experiment", "exp1", "--datastore", "store2")
    assert named == {"datastoreName": "store2", "relativePath": "trainjob-checkpoints/exp1/my-run"}


def test_node_count_2_runs_pytorch_distributed_with_gloo(aml, tmp_path, capsys):
    """--node-count 2 adds PyTorchConfiguration(Gloo, 2 nodes). Stand-in: the offline Workspace, as above."""
    rc = dry_run(aml, tmp_path, capsys, "--node-count", "2")["run_configuration"]
    assert rc["framework"] == "PyTorch" and rc["communicator"] == "gloo" and rc["nodeCount"] == 2
    assert rc["pytorch"] == {"communicationBackend": "gloo", "processCount": None, "nodeCount": 2}
    assert rc["arguments"] == TUTORIAL_ARGS


def test_download_mode_flag_and_trainer_flags_after_double_dash(aml, tmp_path, capsys):
    """--mode download and trainer flags after `--`. Stand-in: the offline Workspace."""
    got = dry_run(aml, tmp_path, capsys, "--mode", "download", "--", "--epochs", "1")
    assert got["run_configuration"]["data"]["input"]["mechanism"] == "download"
    assert got["run_configuration"]["arguments"] == [*TUTORIAL_ARGS, "--epochs", "1"]


def test_transfer_recipe_flags_reach_the_run(aml, tmp_path, capsys):
    """`make submit-aml AML_ARGS="-- --recipe transfer ..."`: the image carries the default backbone's weights, so the
    flags are all a run needs. Stand-in: the offline Workspace."""
    flags = ["--recipe", "transfer", "--finetune", "--val_fraction", "0.2"]
    got = dry_run(aml, tmp_path, capsys, "--", *flags)
    assert got["run_configuration"]["arguments"] == [*TUTORIAL_ARGS, *flags]


def test_dry_run_uses_the_workspace_config_when_present(aml, tmp_path, capsys):
    """The dry run reads .azureml/config.json when it exists (no service call). Stand-in: a config file we write."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"subscription_id": "sub-1", "resource_group": "rg-1", "workspace_name": "ws-1"}))
    common, submit = aml.common, aml.submit
    assert common.run_main(submit.main, ["--dry-run", "--config", str(config)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["workspace"]["source"] == str(config)
    assert "/subscriptions/sub-1/resourcegroups/rg-1/workspaces/ws-1/" in got["datasets"]["input"]["paths"][0]


def test_dry_run_output_is_what_the_sdk_submit_sends(aml, tmp_path, monkeypatch):
    """The dry run's run configuration equals what the SDK's own submit() sends, but for the dataset id.

    Stand-ins for the service, at the three seams submit() crosses: service discovery
    (ServiceContext._fetch_endpoints), saving the dataset definition (FileDataset._ensure_saved_internal, which gives
    the saved id) and the run submission itself (azureml._execution._commands.start_run, which captures the
    RunConfiguration instead of posting it). Everything between them is the SDK's code.
    """
    submit = aml.submit
    from azureml._execution import _commands
    from azureml._restclient.service_context import ServiceContext, _ServiceKeys
    from azureml.core._serialization_utils import _serialize_to_dict
    from azureml.core.script_run_config import submit as sdk_submit
    from azureml.data._dataset import _DatasetRegistration
    from azureml.data.file_dataset import FileDataset

    launcher = tmp_path / "launcher"
    shutil.copytree(submit.LAUNCHER_DIR, launcher)  # submit() may write project files next to the script
    monkeypatch.setattr(submit, "LAUNCHER_DIR", launcher)
    args = submit.build_parser().parse_args(offline_argv(tmp_path, "--node-count", "2"))
    ws, _, dataset, environment, checkpoints = submit.offline_objects(args)

    def saved(self, workspace):
        self._registration = _DatasetRegistration(workspace=workspace, saved_id="id-from-stand-in")
        return "id-from-stand-in"

    sent = {}

    def start_run(project, run_config, **kwargs):
        sent["config"] = _serialize_to_dict(run_config)
        return mock.MagicMock(name="ScriptRun")

    monkeypatch.setattr(ServiceContext, "_fetch_endpoints",
                        lambda self: dict.fromkeys(_ServiceKeys.get_discovery_keys(), "https://offline.invalid"))
    monkeypatch.setattr(FileDataset, "_ensure_saved_internal", saved)
    monkeypatch.setattr(_commands, "start_run", start_run)
    sdk_submit(submit.script_run_config(args, dataset, environment, checkpoints), ws, "day1-experiment-data")

    offline, _ = submit.offline_run_configuration(submit.script_run_config(args, dataset, environment, checkpoints))
    expected = _serialize_to_dict(offline)
    expected["data"]["input"]["dataLocation"]["dataset"]["id"] = "id-from-stand-in"
    assert sent["config"] == expected


def test_submit_without_config_names_the_file_and_make_workspace(tmp_path):
    """No .azureml/config.json: one line naming the file and `make workspace`, exit 2, no traceback. Nothing stands
    in: the script stops before any SDK call."""
    missing = tmp_path / ".azureml" / "config.json"
    out = subprocess.run(without_network([PY, str(AML / "submit.py"), "--config", str(missing)]),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: no workspace config: {missing} not found; run `make workspace` to write it "
        "(or pass --subscription-id, --resource-group and --workspace-name)"]
    assert out.stdout == ""


def test_missing_sdk_says_make_venv(tmp_path):
    """Without azureml-core: the install hint, exit 2. Stand-in: an import hook that hides the azureml package."""
    hide = (
        "import sys, runpy\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'azureml' or name.startswith('azureml.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        f"sys.path.insert(0, {str(AML)!r})\n"
        f"sys.argv = ['submit.py', '--dry-run', '--config', {str(tmp_path / 'none.json')!r}]\n"
        f"runpy.run_path({str(AML / 'submit.py')!r}, run_name='__main__')\n")
    out = subprocess.run([PY, "-c", hide], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "make venv" in out.stderr and "azureml-core" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("az_script, hint", [
    ("echo \"ERROR: Please run 'az login' to setup account.\" >&2; exit 1", "not signed in to Azure: run `az login`"),
    (None, "`az`) is not on PATH"),
])
def test_not_signed_in_gives_the_sign_in_hint(tmp_path, az_script, hint):
    """Signed out (or no Azure CLI): the `az login` hint as the only line, exit 2. Stand-in for the Azure CLI: a fake
    `az` on PATH that answers as a signed-out CLI does (or no `az` at all); the SDK asks it for a token first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if az_script:
        (bin_dir / "az").write_text(f"#!/bin/sh\n{az_script}\n")
        (bin_dir / "az").chmod(0o755)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"subscription_id": "sub", "resource_group": "rg", "workspace_name": "ws"}))
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(without_network([PY, str(AML / "submit.py"), "--config", str(config)]), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and hint in err[0], err


def test_failed_run_reports_status_and_log_with_exit_3(aml, tmp_path, capsys):
    """--wait on a run that fails: its status and log path, exit 3. Stand-in for the service: a Run double that
    answers wait_for_completion/get_status/get_all_logs/get_details as a failed Azure ML run does."""
    common, submit = aml.common, aml.submit
    run = mock.MagicMock(id="day1_123")
    run.get_status.return_value = "Failed"
    run.get_all_logs.return_value = ["outputs/aml-logs/day1_123/user_logs/std_log.txt"]
    run.get_details.return_value = {"error": {"error": {"message": "UserError: exit code 2\nmore"}}}

    assert common.run_main(lambda argv: submit.wait(run)) == 3
    err = capsys.readouterr().err.strip()
    assert err == ("error: run day1_123 ended Failed: UserError: exit code 2; "
                   "log: outputs/aml-logs/day1_123/user_logs/std_log.txt")
    run.wait_for_completion.assert_called_once_with(show_output=True, raise_on_error=False)


def test_help_of_every_script_and_no_work_at_import():
    """--help of each control script answers without Azure; importing one does nothing. Nothing stands in."""
    for name in ("workspace", "compute", "upload_data", "push_image", "submit"):
        out = subprocess.run([PY, str(AML / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage:" in out.stdout, (name, out.stderr)
    probe = (f"import sys; sys.path.insert(0, {str(AML)!r}); import workspace, compute, upload_data, push_image, "
             "submit; print('azureml.core' in sys.modules)")
    out = subprocess.run([PY, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr  # no SDK import, let alone a call, at import time
    assert os.path.isfile(AML / "launcher" / "train.py")
