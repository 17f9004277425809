"""Batch scoring on Azure ML: `make score-aml` (a command job running `train predict`) and `make deploy-batch-aml`
(a batch endpoint whose scoring script is trainjob's own), built from azure-ai-ml's objects and checked offline.

No test reaches Azure: the socket guard fails any connection. What the service does with these objects (mounting the
model and the images, appending the scoring script's lines to predictions.csv, restarting a preempted job) is out of
reach here; each test says which part it stands in for. The scoring script itself runs for real, on a model trained
by the project's own CLI.
"""

import csv
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_runner import assert_one_error_line, run_train
from datagen import write_image_folders

from trainjob.batch.predictions import header

ROOT = Path(__file__).resolve().parents[1]
AML = ROOT / "scripts" / "aml"
BUILD = ROOT / "build" / "aml"
PY = sys.executable

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")


@pytest.fixture(autouse=True)
def _no_network(no_network):
    """Every test here runs behind conftest's socket guard."""


@pytest.fixture(scope="module")
def scripts(aml):
    """score_job and deploy_batch as modules (the aml fixture puts scripts/aml on the path)."""
    pytest.importorskip("azure.ai.ml")
    return importlib.import_module("score_job"), importlib.import_module("deploy_batch")


def make_dry(target: str, tmp_path: Path, aml_args: str) -> subprocess.CompletedProcess:
    """`make TARGET DRY_RUN=1 AML_ARGS=...` without a workspace config, as a user runs it; YAML lands in build/aml/."""
    args = f"--config {tmp_path / 'none.json'} --tag abc1234 {aml_args}"
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed", target, "DRY_RUN=1",
           f"PY={PY}", f"AML_ARGS={args}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


# --- make score-aml: a command job running train predict ----------------------------------------------------------
def test_score_job_dry_run_writes_a_command_job_that_load_job_reads(tmp_path):
    """Out of reach: that Azure ML mounts the model and the images as written and restarts a preempted job with the
    same output path; the YAML is what `az ml job create --file` would send."""
    from azure.ai.ml import load_job

    out = make_dry("score-aml", tmp_path, "--model trainjob:3 --data photos/2026-12")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "nothing sent" in out.stdout
    job = load_job(BUILD / "score-job.yml")
    assert job.type == "command" and job.compute == "cpu-cluster"
    assert job.environment == "trainjob:abc1234"  # push-image's environment; the loader drops the azureml: prefix
    assert job.command.split() == ["train", "predict", "${{inputs.model}}", "${{inputs.images}}", "--output",
                                   "${{outputs.predictions}}/predictions.csv", "--top", "${{inputs.top}}",
                                   "--progress", "lines"]
    model, images = job.inputs["model"], job.inputs["images"]
    assert (model.type, model.mode, model.path) == ("custom_model", "ro_mount", "trainjob:3")  # loader drops azureml:
    assert "path: azureml:trainjob:3" in (BUILD / "score-job.yml").read_text()
    assert (images.type, images.mode) == ("uri_folder", "ro_mount")
    assert images.path == "azureml://datastores/workspaceblobstore/paths/photos/2026-12/"
    assert yaml.safe_load((BUILD / "score-job.yml").read_text())["inputs"]["top"] == 3  # loaded, a NodeInput
    predictions = job.outputs["predictions"]
    assert (predictions.type, predictions.mode) == ("uri_folder", "rw_mount")
    assert predictions.path.startswith(
        "azureml://datastores/workspaceblobstore/paths/trainjob-predictions/trainjob/3/")
    assert f"{predictions.path}predictions.csv (rw_mount)" in out.stdout


@pytest.mark.parametrize("data, path", [
    ("azureml://datastores/photostore/paths/cats", "azureml://datastores/photostore/paths/cats/"),
    ("azureml:photos:2", "azureml:photos:2"),
    ("/photos/cats/", "azureml://datastores/workspaceblobstore/paths/photos/cats/"),
])
def test_data_takes_a_datastore_uri_a_data_asset_or_a_datastore_folder(scripts, data, path):
    score_job, _ = scripts
    args = score_job.build_parser().parse_args(["--model", "trainjob:1", "--data", data])
    assert score_job.score_job(args, "r.azurecr.io/trainjob:t").inputs["images"].path == path


def test_the_predictions_path_is_fixed_by_model_data_and_top(scripts):
    """So a restarted or resubmitted job reopens the same predictions.csv and train predict resumes it (the resume
    itself is tested in test_batch_predict.py; whether it holds on a blobfuse rw_mount is not tested)."""
    score_job, _ = scripts

    def output(*argv):
        args = score_job.build_parser().parse_args(["--model", "trainjob:1", "--data", "photos", *argv])
        return score_job.score_job(args, "r.azurecr.io/trainjob:t").outputs["predictions"].path

    assert output() == output() == output("--wait", "--tag", "other")  # watching or the image: the same scoring
    assert output() != output("--top", "5")  # another CSV shape: train predict would refuse the old file
    args = score_job.build_parser().parse_args(["--model", "trainjob:2", "--data", "photos"])
    assert score_job.score_job(args, "r.azurecr.io/trainjob:t").outputs["predictions"].path != output()
    args = score_job.build_parser().parse_args(["--model", "trainjob:1", "--data", "azureml:photos:1"])
    assert score_job.score_job(args, "r.azurecr.io/trainjob:t").outputs["predictions"].path != output()


# --- make deploy-batch-aml: a batch endpoint and a model deployment ---------------------------------------------------
def test_deploy_batch_dry_run_writes_an_endpoint_and_deployment_that_the_sdk_loaders_read(tmp_path):
    """Out of reach: the service's batch driver, which calls the scoring script and appends its lines."""
    from azure.ai.ml import load_batch_endpoint
    from azure.ai.ml.constants import BatchDeploymentOutputAction

    # load_batch_deployment (BatchDeploymentSchema) refuses a model deployment's settings: block in azure-ai-ml
    # 1.35.2, and its model deployment loader is not exported from azure.ai.ml there.
    from azure.ai.ml.entities._load_functions import load_model_batch_deployment

    out = make_dry("deploy-batch-aml", tmp_path, "--model trainjob:3")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and "nothing sent" in out.stdout
    endpoint = load_batch_endpoint(BUILD / "batch-endpoint.yml")
    assert endpoint.name.startswith("trainjob-batch-") and len(endpoint.name) == len("trainjob-batch-") + 8
    deployment = load_model_batch_deployment(BUILD / "batch-deployment.yml")
    assert (deployment.type, deployment.name, deployment.endpoint_name) == ("model", "trainjob", endpoint.name)
    assert deployment.model == "trainjob:3"  # the loader drops the azureml: prefix the YAML carries
    assert "model: azureml:trainjob:3" in (BUILD / "batch-deployment.yml").read_text()
    assert deployment.environment == "trainjob:abc1234"  # push-image's environment (the full image: batch needs v1)
    assert deployment.compute == "cpu-cluster" and deployment.resources.instance_count == 1
    code = Path(deployment.code_configuration.code)
    assert code.resolve() == AML / "serving" and deployment.code_configuration.scoring_script == "batch_score.py"
    assert "from trainjob.batch.azureml import init, run" in (code / "batch_score.py").read_text()
    settings = deployment.settings
    assert (settings.output_action, settings.output_file_name) == (BatchDeploymentOutputAction.APPEND_ROW,
                                                                   "predictions.csv")
    assert (settings.mini_batch_size, settings.max_concurrency_per_instance, settings.error_threshold) == (128, 1, 0)
    assert (settings.retry_settings.max_retries, settings.retry_settings.timeout) == (3, 300)


def test_the_batch_endpoints_default_name_is_the_workspaces_own(scripts, tmp_path):
    """Batch endpoint names are unique per Azure region: each workspace gets its own, the same on every run."""
    _, deploy_batch = scripts

    def name(*coords):
        argv = ["--model", "trainjob:1", "--config", str(tmp_path / "none.json"), *coords]
        return deploy_batch.endpoint_name(deploy_batch.build_parser().parse_args(argv))

    one = ("--subscription-id", "s", "--resource-group", "rg", "--workspace-name", "ws-1")
    other = ("--subscription-id", "s", "--resource-group", "rg", "--workspace-name", "ws-2")
    assert name(*one) == name(*one) != name(*other)
    assert name(*one, "--endpoint", "my-scorer") == "my-scorer"


# --- refusals: one line, exit 2 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, phrase", [
    (["--model", "trainjob", "--data", "photos"], "is not NAME:VERSION"),
    (["--model", "trainjob:latest", "--data", "photos"], "is not NAME:VERSION"),
    (["--model", "trainjob:1", "--data", "azureml:photos"], "is not a data asset azureml:NAME:VERSION"),
    (["--model", "trainjob:1", "--data", "azureml:photos@latest"], "is not a data asset azureml:NAME:VERSION"),
    (["--model", "trainjob:1", "--data", "azureml://datastores/ws/cats"], "is not azureml://datastores/NAME/paths"),
    (["--model", "trainjob:1", "--data", "https://example.org/cats"], "is not a folder on the datastore"),
    (["--model", "trainjob:1", "--data", "../cats"], "is not a folder on the datastore"),
    (["--model", "trainjob:1", "--data", "/"], "is not a folder on the datastore"),
    (["--model", "trainjob:1", "--data", "photos", "--top", "0"], "--top must be at least 1"),
])
def test_score_job_refuses_bad_model_and_data_with_one_line(scripts, tmp_path, capsys, argv, phrase):
    import common

    score_job, _ = scripts
    code = common.run_main(score_job.main, [*argv, "--dry-run", "--config", str(tmp_path / "none.json")])
    assert_one_error_line(code, capsys.readouterr().err, phrase)


@pytest.mark.parametrize("argv, phrase", [
    (["--model", "trainjob"], "is not NAME:VERSION"),
    (["--model", "trainjob:1", "--endpoint", "9lives"], "is not an endpoint name"),
    (["--model", "trainjob:1", "--deployment", "a b"], "is not a deployment name"),
    (["--model", "trainjob:1", "--mini-batch-size", "0"], "--mini-batch-size must be at least 1"),
])
def test_deploy_batch_refuses_bad_flags_with_one_line(scripts, tmp_path, capsys, argv, phrase):
    import common

    _, deploy_batch = scripts
    code = common.run_main(deploy_batch.main, [*argv, "--dry-run", "--config", str(tmp_path / "none.json")])
    assert_one_error_line(code, capsys.readouterr().err, phrase)


@pytest.mark.parametrize("script, argv", [("score_job", ["--model", "trainjob:1", "--data", "photos"]),
                                          ("deploy_batch", ["--model", "trainjob:1"])])
def test_a_real_run_without_a_workspace_config_says_how_to_get_one(scripts, tmp_path, capsys, script, argv):
    """Stops before any Azure call: the socket guard would fail one."""
    import common

    main = importlib.import_module(script).main
    code = common.run_main(main, [*argv, "--config", str(tmp_path / "none.json")])
    assert_one_error_line(code, capsys.readouterr().err, "no workspace config", "make workspace")


@pytest.mark.parametrize("target, aml_args", [("score-aml", "--model trainjob --data photos"),
                                              ("deploy-batch-aml", "--model trainjob")])
def test_a_bad_model_through_make_is_one_line_and_exit_2(tmp_path, target, aml_args):
    out = make_dry(target, tmp_path, aml_args)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: --model 'trainjob' is not NAME:VERSION")
    assert "Traceback" not in out.stderr


# --- the batch scoring script, for real ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tutorial model trained for one epoch by the real CLI on generated images (seconds), and those images."""
    root = tmp_path_factory.mktemp("batch")
    data = write_image_folders(root / "photos", classes=("cat", "dog", "ship"), per_class_train=4, per_class_test=2,
                               size=[(40, 36), (36, 44)], extensions=(".png", ".jpg"))
    result = run_train("--data_path", data, "--output_dir", root / "out", "--epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "out" / "model.pt", data


@pytest.fixture
def batch_score(tiny, tmp_path, monkeypatch, two_threads):
    """scripts/aml/serving/batch_score.py loaded as Azure ML's batch driver loads the scoring script, init() done,
    with AZUREML_MODEL_DIR laid out as Azure ML mounts a registered model (stands in for the deployment's mount)."""
    models = tmp_path / "azureml-models"
    (models / "trainjob" / "1").mkdir(parents=True)
    shutil.copy(tiny[0], models / "trainjob" / "1" / "model.pt")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(models))
    spec = importlib.util.spec_from_file_location("batch_score", AML / "serving" / "batch_score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    return module


def test_the_scoring_script_gives_each_file_the_line_train_predict_writes(batch_score, tiny, tmp_path):
    """Out of reach: the batch driver that lists the input folder into mini-batches and appends the returned lines
    to predictions.csv; run() gets a mini-batch as the driver passes it, a list of file paths."""
    images = sorted(p for p in (tiny[1] / "test").rglob("*.*"))
    broken, empty = tmp_path / "broken.jpg", tmp_path / "empty.png"
    broken.write_bytes(b"not a jpeg")
    empty.write_bytes(b"")
    mini_batch = [str(p) for p in [*images, broken, empty]] + [str(tmp_path / "gone.png")]
    lines = batch_score.run(mini_batch)
    assert len(lines) == len(mini_batch) and all("\n" not in line for line in lines)
    rows = {r[0]: r for r in csv.reader(lines)}
    assert set(rows) == set(mini_batch) and all(len(r) == len(header(3)) for r in rows.values())
    assert rows[str(empty)][-1] == "empty file" and rows[str(tmp_path / "gone.png")][-1].startswith("unreadable")
    assert rows[str(broken)][-1] and not rows[str(broken)][1]  # an error, no classes

    out = tmp_path / "predictions.csv"
    result = run_train("predict", tiny[0], *images, broken, empty, "--output", out)
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as f:
        expected = {r["path"]: r for r in csv.DictReader(f)}
    assert list(next(iter(expected.values()))) == header(3)  # the same columns, in the same order
    for path, want in expected.items():
        got = dict(zip(header(3), rows[path], strict=True))
        assert [got[f"class_{k}"] for k in (1, 2, 3)] == [want[f"class_{k}"] for k in (1, 2, 3)], path
        assert got["error"] == want["error"], path
        for k in (1, 2, 3):
            if want[f"probability_{k}"]:
                assert float(got[f"probability_{k}"]) == pytest.approx(float(want[f"probability_{k}"]), abs=1e-5)


def test_train_predict_takes_the_folder_holding_model_pt(tiny, tmp_path):
    """A job's custom_model input is mounted as a path that may be the model's folder (the docs leave file or
    folder open), so train predict takes either."""
    from trainjob.errors import UserError
    from trainjob.inference import model_in

    folder = tmp_path / "mounted" / "model"
    folder.mkdir(parents=True)
    shutil.copy(tiny[0], folder / "model.pt")
    image = next((tiny[1] / "test").rglob("*.png"))
    by_file, by_folder = (run_train("predict", m, image, "--json") for m in (tiny[0], tmp_path / "mounted"))
    assert by_folder.returncode == 0, by_folder.stderr
    assert by_folder.stdout == by_file.stdout
    (tmp_path / "mounted" / "other").mkdir()
    shutil.copy(tiny[0], tmp_path / "mounted" / "other" / "model.pt")
    with pytest.raises(UserError, match="holding 2 model.pt files"):
        model_in(str(tmp_path / "mounted"))
    shutil.copy(tiny[0], tmp_path / "mounted" / "model.pt")
    assert model_in(os.fspath(tmp_path / "mounted")) == str(tmp_path / "mounted" / "model.pt")  # the top one first
