"""Azure ML SDK v2: the tutorial's command job and its sweep, built from azure-ai-ml's objects and checked offline.

The dry runs' YAML is read back with azure.ai.ml.load_job and checked field by field (the SDK's jobs.validate() is
shallow). No test reaches Azure: the socket guard fails any connection; the one stand-in, for a submitted job's
status, is named in its test.
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AML = ROOT / "scripts" / "aml"
PY = sys.executable

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")


@pytest.fixture(scope="module")
def v2(aml):
    pytest.importorskip("azure.ai.ml")
    return aml.v2


@pytest.fixture(autouse=True)
def _no_network(no_network):
    """Every test here runs behind conftest's socket guard."""


def make(target: str, tmp_path: Path, *aml_args: str, sdk: str = "v2", env=None) -> subprocess.CompletedProcess:
    """`make TARGET AML_SDK=v2 DRY_RUN=1 AML_ARGS=...` as a user runs it; the YAML lands in build/aml/."""
    args = " ".join(["--config", str(tmp_path / "none.json"), "--tag", "abc1234", *aml_args])
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", target, f"AML_SDK={sdk}",
           "DRY_RUN=1", f"PY={PY}", f"AML_ARGS={args}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def test_submit_dry_run_writes_the_tutorials_command_job_that_load_job_reads(tmp_path):
    from azure.ai.ml import load_job

    out = make("submit-aml", tmp_path, "--node-count", "2", "--", "--epochs", "1")
    assert out.returncode == 0, out.stderr
    path = ROOT / "build" / "aml" / "job.yml"
    assert f"wrote {path.relative_to(ROOT)}" in out.stdout and "nothing sent" in out.stdout
    job = load_job(path)
    assert job.type == "command"  # load_job gives the SDK's Command, what command() builds
    assert job.compute == "cpu-cluster"
    assert job.experiment_name == "day1-experiment-data"
    assert job.environment == "trainjob:abc1234"  # push-image's environment; the loader drops the azureml: prefix
    assert "environment: azureml:trainjob:abc1234" in path.read_text()
    data = job.inputs["data"]
    assert (data.type, data.mode) == ("uri_folder", "ro_mount")
    assert data.path == "azureml://datastores/workspaceblobstore/paths/datasets/cifar10/"
    spec = yaml.safe_load(path.read_text())  # the loaded job wraps literal inputs in NodeInput
    assert (spec["inputs"]["learning_rate"], spec["inputs"]["momentum"]) == (0.003, 0.92)
    checkpoints = job.outputs["checkpoints"]
    assert (checkpoints.type, checkpoints.mode) == ("uri_folder", "rw_mount")
    assert checkpoints.path.startswith(
        "azureml://datastores/workspaceblobstore/paths/trainjob-checkpoints/day1-experiment-data/")
    assert job.command.split() == [
        "train", "--data_path", "${{inputs.data}}", "--learning_rate", "${{inputs.learning_rate}}",
        "--momentum", "${{inputs.momentum}}", "--checkpoint_dir", "${{outputs.checkpoints}}",
        "--output_dir", "./outputs", "--tracking", "mlflow", "--epochs", "1"]
    assert job.resources.instance_count == 2
    assert job.distribution.type == "pytorch" and job.distribution.process_count_per_instance == 1


def test_the_same_command_gets_the_same_checkpoint_folder_and_other_settings_another(v2, tmp_path):
    import common
    import submit

    def key(*argv):
        return common.run_key(submit.build_parser().parse_args(["--sdk", "v2", *argv]))

    assert key() == key() == key("--wait")  # watching or not is the same training
    assert key() != key("--learning-rate", "0.01")
    assert key() != key("--", "--epochs", "3")
    assert key() != key("--data-path", "datasets/other")
    assert key("--run-key", "my-run") == "my-run"
    args = submit.build_parser().parse_args(["--sdk", "v2", "--experiment", "exp1", "--run-key", "k1"])
    assert common.checkpoint_path(args) == "trainjob-checkpoints/exp1/k1"


def test_download_mode_and_one_node_have_no_distribution(v2, tmp_path):
    import submit

    args = submit.build_parser().parse_args(["--sdk", "v2", "--mode", "download"])
    job = v2.command_job(args, "r.azurecr.io/trainjob:t")
    assert job.inputs["data"].mode == "download" and job.distribution is None
    bad = submit.build_parser().parse_args(["--sdk", "v2", "--node-count", "0"])
    with pytest.raises(Exception, match="--node-count must be at least 1"):
        v2.command_job(bad, "r.azurecr.io/trainjob:t")


def test_sweep_dry_run_writes_a_sweep_over_learning_rate_and_momentum_that_load_job_reads(tmp_path):
    import math

    from azure.ai.ml import load_job
    from azure.ai.ml.sweep import SweepJob

    out = make("sweep-aml", tmp_path, "--max-trials", "12", "--max-concurrent", "3")
    assert out.returncode == 0, out.stderr
    job = load_job(ROOT / "build" / "aml" / "sweep.yml")
    assert isinstance(job, SweepJob)
    assert job.compute.endswith("cpu-cluster") and job.sampling_algorithm == "random"
    assert (job.objective.primary_metric, job.objective.goal) == ("test_accuracy", "maximize")
    lr, momentum = job.search_space["learning_rate"], job.search_space["momentum"]
    assert lr.type == "loguniform" and math.exp(lr.min_value) == pytest.approx(1e-4)
    assert math.exp(lr.max_value) == pytest.approx(0.1)
    assert momentum.type == "uniform" and (momentum.min_value, momentum.max_value) == (0.5, 0.99)
    assert job.early_termination.type == "bandit" and job.early_termination.slack_factor == 0.1
    assert (job.limits.max_total_trials, job.limits.max_concurrent_trials) == (12, 3)
    assert job.inputs["data"].mode == "ro_mount"
    assert job.outputs["checkpoints"].path.endswith("/${{name}}/")  # each trial its own folder
    assert "--learning_rate ${{search_space.learning_rate}}" in job.trial.command
    assert "--momentum ${{search_space.momentum}}" in job.trial.command
    assert job.trial.environment == "trainjob:abc1234"  # push-image's environment, as the single job's


def test_bayesian_sweeps_drop_early_termination_and_concurrency_is_capped_by_the_cluster(tmp_path):
    from azure.ai.ml import load_job

    out = make("sweep-aml", tmp_path, "--sampling", "bayesian")
    assert out.returncode == 0, out.stderr
    assert "no early termination" in out.stdout
    job = load_job(ROOT / "build" / "aml" / "sweep.yml")
    assert job.sampling_algorithm == "bayesian" and job.early_termination is None
    too_many = make("sweep-aml", tmp_path, "--max-concurrent", "8")
    assert too_many.returncode == 2
    assert too_many.stderr.strip().startswith("error: --max-concurrent 8 must be 1 to --max-nodes 4")


def test_no_secret_reaches_the_yaml_or_the_output(tmp_path):
    import os

    secret = "hunter2-client-secret"
    env = {**os.environ, "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": secret}
    for target, name in (("submit-aml", "job.yml"), ("sweep-aml", "sweep.yml")):
        out = make(target, tmp_path, "--auth", "sp", env=env)
        assert out.returncode == 0, out.stderr
        text = (ROOT / "build" / "aml" / name).read_text()
        assert secret not in text + out.stdout + out.stderr
        for word in ("password", "secret", "token"):
            assert word not in text.lower(), (name, word)


@pytest.mark.parametrize("status, code", [("Completed", 0), ("Failed", 3), ("Canceled", 3)])
def test_wait_maps_the_final_status_to_the_exit_code(v2, status, code, capsys):
    """Stand-in for the service: a client whose jobs.stream() returns and jobs.get() reports `status`."""
    import common

    client = SimpleNamespace(jobs=SimpleNamespace(stream=lambda name: None,
                                                  get=lambda name: SimpleNamespace(status=status)))
    job = SimpleNamespace(name="job-1", studio_url="https://ml.azure.com/runs/job-1")
    assert common.run_main(lambda argv: v2.wait(client, job), []) == code
    if code:
        assert f"job job-1 ended {status}" in capsys.readouterr().err


def test_a_real_submit_without_a_workspace_config_says_how_to_get_one(tmp_path):
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", "submit-aml", "AML_SDK=v2",
           f"PY={PY}", f"AML_ARGS=--config {tmp_path / 'none.json'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: no workspace config") and "make workspace" in out.stderr
    assert "Traceback" not in out.stderr


def test_register_model_dry_run_writes_the_jobs_model_pt_as_a_model_that_load_model_reads(tmp_path):
    from azure.ai.ml import load_model

    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", "register-model", "DRY_RUN=1",
           f"PY={PY}", "AML_ARGS=--job calm_box_123 --name cifar10-net"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "nothing sent" in out.stdout
    model = load_model(ROOT / "build" / "aml" / "model.yml")
    assert (model.name, model.type) == ("cifar10-net", "custom_model")
    assert model.path == "azureml://jobs/calm_box_123/outputs/artifacts/paths/outputs/model.pt"
    assert model.tags["trainjob.job"] == "calm_box_123"
    bad = subprocess.run(cmd[:-1] + ["AML_ARGS=--job 'not a name'"], capture_output=True, text=True, timeout=180)
    assert bad.returncode == 2
    [line] = [ln for ln in bad.stderr.splitlines() if ln.startswith("error")]
    assert "is not an Azure ML name" in line and "Traceback" not in bad.stderr


@pytest.mark.parametrize("extra, tier", [((), "dedicated"), (("--low-priority",), "low_priority")])
def test_compute_dry_run_writes_the_tutorials_cluster_that_load_compute_reads(tmp_path, extra, tier):
    from azure.ai.ml import load_compute

    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", "compute", "AML_SDK=v2",
           "DRY_RUN=1", f"PY={PY}", f"AML_ARGS={' '.join(extra)}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    cluster = load_compute(ROOT / "build" / "aml" / "compute.yml")
    assert (cluster.type, cluster.name, cluster.size) == ("amlcompute", "cpu-cluster", "STANDARD_D2_V2")
    assert (cluster.min_instances, cluster.max_instances, cluster.idle_time_before_scale_down) == (0, 4, 2400)
    assert cluster.tier == tier


def make_dry(target: str, aml_args: str, *variables: str) -> subprocess.CompletedProcess:
    """`make TARGET AML_SDK=v2 DRY_RUN=1 AML_ARGS=...` with no config file, as a user runs it."""
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", target, "AML_SDK=v2",
           "DRY_RUN=1", f"PY={PY}", f"AML_ARGS={aml_args}", *variables]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_workspace_dry_run_writes_a_workspace_that_load_workspace_reads(tmp_path):
    from azure.ai.ml import load_workspace

    coords = "--subscription-id sub-1 --resource-group rg-1 --workspace-name ws-1"
    out = make_dry("workspace", f"--config {tmp_path / 'config.json'} {coords} --location westeurope")
    assert out.returncode == 0, out.stderr
    assert "nothing sent" in out.stdout and not (tmp_path / "config.json").exists()  # a dry run writes no config
    ws = load_workspace(ROOT / "build" / "aml" / "workspace.yml")
    assert (ws.name, ws.resource_group, ws.location) == ("ws-1", "rg-1", "westeurope")
    nameless = make_dry("workspace", f"--config {tmp_path / 'config.json'}")
    assert nameless.returncode == 2 and nameless.stderr.startswith("error: name the workspace")


def test_push_image_dry_run_registers_the_image_as_an_environment_that_load_environment_reads(tmp_path):
    from azure.ai.ml import load_environment

    out = make_dry("push-image", f"--config {tmp_path / 'none.json'}", "TAG=abc1234")
    assert out.returncode == 0, out.stderr
    env = load_environment(ROOT / "build" / "aml" / "environment.yml")
    assert (env.name, env.version, env.image) == ("trainjob", "abc1234", "offline-dry-run.azurecr.io/trainjob:abc1234")
    routes = {k: (v["path"], v["port"]) for k, v in env.inference_config.items()}  # the REST form, camelCase
    assert routes == {"livenessRoute": ("/", 5001), "readinessRoute": ("/", 5001), "scoringRoute": ("/score", 5001)}
    v1_only = make_dry("push-image", f"--config {tmp_path / 'none.json'} --workspace-build")
    assert v1_only.returncode == 2 and "v1 flags" in v1_only.stderr and "Traceback" not in v1_only.stderr


def test_upload_data_dry_run_checks_the_folder_and_writes_the_data_asset_load_data_reads(tmp_path):
    from azure.ai.ml import load_data
    from datagen import write_cifar_batches

    write_cifar_batches(tmp_path / "data")
    out = make_dry("upload-data", f"--config {tmp_path / 'none.json'}", f"DATA={tmp_path / 'data'}")
    assert out.returncode == 0, out.stderr
    assert "cifar-batches, 10 classes, 60 train and 30 test images" in out.stdout  # the trainer's own verdict
    assert "7 files" in out.stdout and "workspaceblobstore/datasets/cifar10/" in out.stdout
    data = load_data(ROOT / "build" / "aml" / "data.yml")
    assert (data.name, data.type) == ("cifar10", "uri_folder")
    assert data.path == "azureml://datastores/workspaceblobstore/paths/datasets/cifar10/"
    (tmp_path / "empty").mkdir()
    (ROOT / "build" / "aml" / "data.yml").unlink()
    refused = make_dry("upload-data", f"--config {tmp_path / 'none.json'}", f"DATA={tmp_path / 'empty'}")
    assert refused.returncode == 2 and refused.stderr.startswith("error: not uploading")
    assert not (ROOT / "build" / "aml" / "data.yml").exists()  # refused before anything was written


def test_v2_sign_in_and_service_refusals_are_one_line_with_exit_2(v2, capsys):
    """azure-identity's and azure-core's own exceptions, raised as the SDK raises them, mapped by run_main."""
    import common
    from azure.core.exceptions import HttpResponseError
    from azure.identity import CredentialUnavailableError

    def not_signed_in(argv):
        raise CredentialUnavailableError("AzureCliCredential: Please run 'az login' to set up an account")

    assert common.run_main(not_signed_in, []) == 2
    assert capsys.readouterr().err.startswith("error: Azure sign-in failed (AzureCliCredential: Please run")

    def forbidden(argv):
        error = HttpResponseError("(AuthorizationFailed) The client does not have authorization\nmore detail")
        error.status_code = 403
        raise error

    assert common.run_main(forbidden, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Azure ML: (AuthorizationFailed)") and len(err.strip().splitlines()) == 1


def test_deploy_dry_run_writes_an_endpoint_and_deployment_that_the_sdk_loaders_read(tmp_path):
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    out = make_dry("deploy-aml", f"--config {tmp_path / 'none.json'} --model trainjob:3 --tag abc1234")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "nothing sent" in out.stdout
    endpoint = load_online_endpoint(ROOT / "build" / "aml" / "endpoint.yml")
    assert endpoint.name.startswith("trainjob-") and len(endpoint.name) == len("trainjob-") + 8  # unique per region
    assert endpoint.auth_mode == "key"
    deployment = load_online_deployment(ROOT / "build" / "aml" / "deployment.yml")
    assert (deployment.name, deployment.endpoint_name) == ("blue", endpoint.name)
    assert deployment.model == "trainjob:3"  # the loader drops the azureml: prefix the YAML carries
    assert "model: azureml:trainjob:3" in (ROOT / "build" / "aml" / "deployment.yml").read_text()
    assert deployment.environment == "trainjob:abc1234"  # push-image's, which carries the inference_config routes
    assert deployment.readiness_probe.initial_delay and deployment.readiness_probe.failure_threshold
    assert deployment.environment_variables == {"WORKER_COUNT": "1", "WORKER_TIMEOUT": "300",
                                                "SCORING_TIMEOUT_MS": "30000"}
    assert deployment.request_settings.request_timeout_ms == 30000
    assert deployment.code_configuration.scoring_script == "score.py"
    code = Path(deployment.code_configuration.code)
    assert code.resolve() == AML / "serving" and (code / "score.py").read_text().count("from trainjob.score import")
    assert (deployment.instance_type, deployment.instance_count) == ("Standard_DS3_v2", 1)
    text = "".join((ROOT / "build" / "aml" / name).read_text() for name in ("endpoint.yml", "deployment.yml"))
    assert "key" not in text.replace("auth_mode: key", "")  # no key or credential is written


def test_an_inline_image_deployment_carries_the_routes_and_no_code_serves_the_images_own_script(tmp_path):
    """--inline-environment (a workspace where push-image AML_SDK=v2 has not run): the image as an anonymous
    environment with the custom-container routes; --no-code uploads nothing; the server settings are flags."""
    from azure.ai.ml import load_online_deployment

    out = make_dry("deploy-aml", f"--config {tmp_path / 'none.json'} --model trainjob:3 --tag abc1234 "
                   "--inline-environment --no-code --workers 2 --request-timeout 60 --worker-timeout 120")
    assert out.returncode == 0, out.stderr
    deployment = load_online_deployment(ROOT / "build" / "aml" / "deployment.yml")
    env = deployment.environment
    assert env.image == "offline-dry-run.azurecr.io/trainjob:abc1234"
    assert {k: (v["path"], v["port"]) for k, v in env.inference_config.items()} == {
        "livenessRoute": ("/", 5001), "readinessRoute": ("/", 5001), "scoringRoute": ("/score", 5001)}
    assert deployment.code_configuration is None
    assert deployment.environment_variables == {"WORKER_COUNT": "2", "WORKER_TIMEOUT": "120",
                                                "SCORING_TIMEOUT_MS": "60000"}
    assert (deployment.request_settings.request_timeout_ms,
            deployment.request_settings.max_concurrent_requests_per_instance) == (60000, 2)


def test_default_endpoint_name_is_the_workspaces_own_and_the_same_on_every_run(aml, tmp_path):
    import json

    import deploy

    def name(config, *flags):
        return deploy.endpoint_name(deploy.build_parser().parse_args(["--model", "m:1", "--config", str(config),
                                                                        *flags]))

    configs = []
    for n, ws in enumerate(("ws-one", "ws-two")):
        configs.append(tmp_path / f"config{n}.json")
        configs[-1].write_text(json.dumps({"subscription_id": "s", "resource_group": "rg", "workspace_name": ws}))
    assert name(configs[0]) == name(configs[0]) != name(configs[1])
    assert name(configs[0]).startswith("trainjob-") and name(configs[0], "--endpoint", "mine") == "mine"


def test_a_missing_registered_environment_is_one_line_naming_push_image(v2, aml, tmp_path):
    """Stand-in for the service: a client whose environments.get() raises azure-core's own not-found error."""
    import push_image
    import submit
    from azure.core.exceptions import ResourceNotFoundError

    def get(name, version):
        raise ResourceNotFoundError(f"environment {name}:{version} not found")

    client = SimpleNamespace(environments=SimpleNamespace(get=get))
    args = submit.build_parser().parse_args(["--sdk", "v2", "--tag", "abc1234"])
    with pytest.raises(aml.common.AmlError, match=r"run `make push-image AML_SDK=v2 TAG=abc1234`"):
        push_image.v2_environment(args, client)
    inline = submit.build_parser().parse_args(["--sdk", "v2", "--tag", "t1", "--inline-environment"])
    assert push_image.v2_environment(inline) == "offline-dry-run.azurecr.io/trainjob:t1"
    assert push_image.v2_environment(submit.build_parser().parse_args(["--image-uri", "r.io/x:1"])) == "r.io/x:1"


@pytest.mark.parametrize("flags, phrase", [("--model trainjob", "is not NAME:VERSION"),
                                           ("--model trainjob:1 --endpoint 9x", "is not an endpoint name"),
                                           ("--model trainjob:1 --request-timeout 181", "1 to 180"),
                                           ("--model trainjob:1 --worker-timeout 30", "must be above"),
                                           ("--model trainjob:1 --workers 0", "--workers must be at least 1")])
def test_deploy_refuses_bad_names_with_one_line(tmp_path, flags, phrase):
    out = make_dry("deploy-aml", f"--config {tmp_path / 'none.json'} {flags}")
    assert out.returncode == 2 and phrase in out.stderr and "Traceback" not in out.stderr


def test_a_registered_mltable_asset_is_the_data_and_its_datastore_the_image_root(tmp_path):
    """make submit-aml AML_SDK=v2 AML_ARGS="--data azureml:NAME:VERSION": the MLTable (or JSON Lines file) is the
    trainer's --data_path, and the datastore its azureml:// URLs name is mounted as its --image_root."""
    from azure.ai.ml import load_job

    out = make("submit-aml", tmp_path, "--data", "azureml:pets-labelled:3", "--image-datastore", "labelling")
    assert out.returncode == 0, out.stderr
    assert "data azureml:pets-labelled:3 (mltable, ro_mount) (type assumed" in out.stdout
    job = load_job(ROOT / "build" / "aml" / "job.yml")
    data, images = job.inputs["data"], job.inputs["images"]
    assert (data.type, data.path, data.mode) == ("mltable", "pets-labelled:3", "ro_mount")
    assert "path: azureml:pets-labelled:3" in (ROOT / "build" / "aml" / "job.yml").read_text()  # the loader drops it
    assert (images.type, images.path, images.mode) == ("uri_folder", "azureml://datastores/labelling/paths/",
                                                       "ro_mount")
    words = job.command.split()
    assert words[words.index("--data_path") + 1] == "${{inputs.data}}"
    assert words[words.index("--image_root") + 1] == "${{inputs.images}}"


def test_a_uri_file_manifest_downloads_but_the_images_stay_mounted_and_each_asset_has_its_checkpoints(v2):
    import submit

    def job(*argv):
        return v2.command_job(submit.build_parser().parse_args(["--sdk", "v2", *argv]), "r.azurecr.io/trainjob:t")

    manifest = job("--data", "azureml:labels-jsonl:1", "--data-type", "uri_file", "--mode", "download")
    assert (manifest.inputs["data"].type, manifest.inputs["data"].mode) == ("uri_file", "download")
    assert manifest.inputs["images"].mode == "ro_mount", "a download would copy the whole datastore"
    assert manifest.inputs["images"].path == "azureml://datastores/workspaceblobstore/paths/"
    folders = job("--data", "azureml:pets-folders@latest", "--data-type", "uri_folder")
    assert "images" not in folders.inputs and "--image_root" not in folders.command
    keys = {j.tags["trainjob.run_key"] for j in (manifest, folders, job(), job("--data", "azureml:labels-jsonl:2",
                                                                             "--data-type", "uri_file"))}
    assert len(keys) == 4, "another asset (or version) trains into another checkpoint folder"
    with pytest.raises(Exception, match="is not a registered data asset: expected azureml:NAME:VERSION"):
        job("--data", "pets.jsonl")


def test_the_asset_type_comes_from_the_workspace_and_v1_refuses_data(v2, aml, capsys):
    """Stand-in for the service: a client whose data.get() returns an asset of a given type."""
    import common

    seen = []

    def get(name, version=None, label=None):
        seen.append((name, version, label))
        return SimpleNamespace(type="uri_file")

    client = SimpleNamespace(data=SimpleNamespace(get=get))
    assert v2.asset_type(client, "azureml:labels:4") == v2.asset_type(client, "azureml:labels@latest") == "uri_file"
    assert seen == [("labels", "4", None), ("labels", None, "latest")]
    assert common.run_main(aml.submit.main, ["--data", "azureml:labels:4", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data (a registered data asset) needs the SDK v2") and len(err.splitlines()) == 1
