"""make compute, push-image, upload-data, workspace: the SDK objects they send, checked offline (no Azure).

A socket guard fails any Python-level connection; each docstring names what stands in for the service.
"""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # the SDK's vendored ruamel.yaml

ROOT = Path(__file__).resolve().parents[1]
AML = ROOT / "scripts" / "aml"


@pytest.fixture(autouse=True)
def _no_network(no_network):
    """Every test here runs behind conftest's socket guard."""


# --- compute ----------------------------------------------------------------------------------------------------
def test_compute_request_has_the_tutorial_values(aml):
    """The create request for cpu-cluster, as the SDK serialises it (AmlCompute._build_create_payload). No service
    stands in: the payload is built locally and never sent."""
    compute = aml.compute
    from azureml.core.compute import AmlCompute

    args = compute.build_parser().parse_args([])
    payload = AmlCompute._build_create_payload(compute.provisioning_config(args), "westeurope", "sub")
    props = payload["properties"]["properties"]
    assert args.name == "cpu-cluster"
    assert props["vmSize"] == "STANDARD_D2_V2"
    assert props["vmPriority"] == "dedicated"
    assert props["scaleSettings"] == {"minNodeCount": 0, "maxNodeCount": 4, "nodeIdleTimeBeforeScaleDown": "PT2400S"}


def test_compute_flags_override_and_bad_counts_are_refused(aml, capsys):
    """Flags override the tutorial values; impossible node counts fail with exit 2 before any Azure call."""
    common, compute = aml.common, aml.compute
    from azureml.core.compute import AmlCompute

    args = compute.build_parser().parse_args(["--vm-size", "STANDARD_D4_V2", "--max-nodes", "2", "--low-priority"])
    props = AmlCompute._build_create_payload(compute.provisioning_config(args), "westeurope", "s")["properties"]
    assert props["properties"]["vmSize"] == "STANDARD_D4_V2"
    assert props["properties"]["scaleSettings"]["maxNodeCount"] == 2
    assert props["properties"]["vmPriority"] == "lowpriority"
    assert common.run_main(compute.main, ["--min-nodes", "3", "--max-nodes", "2"]) == 2
    assert "--min-nodes" in capsys.readouterr().err


# --- push-image -------------------------------------------------------------------------------------------------
def test_environment_runs_the_image_as_is_with_its_venv_python(aml):
    """The environment push-image registers, serialised by the SDK: image, user-managed dependencies (no conda
    layer), the image's /opt/venv python, no credentials for the workspace's own registry. Built offline."""
    push_image = aml.push_image
    from azureml.core._serialization_utils import _serialize_to_dict

    env = _serialize_to_dict(push_image.make_environment("trainjob", "myws.azurecr.io/trainjob:abc1234"))
    assert env["name"] == "trainjob"
    assert env["docker"]["baseImage"] == "myws.azurecr.io/trainjob:abc1234"
    assert env["docker"]["baseDockerfile"] is None
    assert env["python"]["userManagedDependencies"] is True
    assert env["python"]["interpreterPath"] == "/opt/venv/bin/python"
    assert env["docker"]["baseImageRegistry"]["address"] is None
    assert env["environmentVariables"] == {}  # not the SDK's placeholder EXAMPLE_ENV_VAR


def test_no_environment_push_image_registers_carries_the_sdks_placeholder_variable(aml, tmp_path, capsys):
    """Environment() gives every new environment EXAMPLE_ENV_VAR=EXAMPLE_VALUE, which would reach each run's
    process; both ways push-image registers one (an image, or a Dockerfile the workspace builds) drop it, and quietly
    (the SDK's setter would log a deprecation warning). Serialised by the SDK, offline (--dry-run)."""
    common, push_image = aml.common, aml.push_image
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\n")
    for argv in (["--dry-run", "--tag", "t1"], ["--dry-run", "--workspace-build", "--dockerfile", str(dockerfile)]):
        assert common.run_main(push_image.main, argv) == 0
        out, err = capsys.readouterr()
        assert "EXAMPLE_ENV_VAR" not in out and json.loads(out)["environment"]["environmentVariables"] == {}
        assert "deprecated" not in err


def test_dockerfile_names_the_venv_python_the_environment_uses():
    """The Docker engineer's image puts its venv at /opt/venv (docker/Dockerfile); the environment relies on it."""
    dockerfile = ROOT / "docker" / "Dockerfile"
    if not dockerfile.exists():
        pytest.skip("docker/Dockerfile not written yet")
    text = dockerfile.read_text()
    assert "/opt/venv" in text and "ENV PATH=/opt/venv/bin:$PATH" in text


def test_private_registry_credentials_and_managed_identity(aml, monkeypatch, capsys):
    """Both documented options for another private registry, serialised by the SDK (push_image.py --dry-run)."""
    common, push_image = aml.common, aml.push_image
    monkeypatch.setenv("REG_PASSWORD", "s3cret")
    argv = ["--dry-run", "--tag", "t1", "--registry", "reg.example.com", "--registry-username", "bot",
            "--registry-password-env", "REG_PASSWORD"]
    assert common.run_main(push_image.main, argv) == 0
    printed = capsys.readouterr().out
    assert "s3cret" not in printed, "a dry run must never print the registry password"
    env = json.loads(printed)["environment"]
    assert env["docker"]["baseImageRegistry"]["password"] == "***"  # set, and not shown
    assert env["docker"]["baseImage"] == "reg.example.com/trainjob:t1"
    assert env["docker"]["baseImageRegistry"]["address"] == "reg.example.com"
    assert env["docker"]["baseImageRegistry"]["username"] == "bot"

    argv = ["--dry-run", "--tag", "t1", "--registry", "reg.example.com", "--registry-identity-client-id", "cid"]
    assert common.run_main(push_image.main, argv) == 0
    registry = json.loads(capsys.readouterr().out)["environment"]["docker"]["baseImageRegistry"]
    assert registry["registryIdentity"] == {"resourceId": None, "clientId": "cid"}
    assert registry["password"] is None

    assert common.run_main(push_image.main, ["--dry-run", "--registry", "r.io", "--registry-username", "bot"]) == 2
    assert "--registry-password-env" in capsys.readouterr().err


def test_workspace_build_sends_the_dockerfile_or_refuses_one_that_needs_context(aml, tmp_path, capsys):
    """--workspace-build: Environment.from_dockerfile with the Dockerfile's text (the SDK sends no build context,
    so a Dockerfile that COPYs local files is refused with the reason). Built offline (--dry-run)."""
    common, push_image = aml.common, aml.push_image
    standalone = tmp_path / "Dockerfile"
    standalone.write_text("FROM python:3.11-slim\nRUN pip install trainjob[azure]\n")
    assert common.run_main(push_image.main, ["--dry-run", "--workspace-build", "--dockerfile", str(standalone)]) == 0
    env = json.loads(capsys.readouterr().out)["environment"]
    assert env["docker"]["baseDockerfile"] == standalone.read_text()
    assert env["docker"]["baseImage"] is None
    assert env["python"]["interpreterPath"] == "/opt/venv/bin/python"

    needs_context = tmp_path / "Dockerfile.ctx"
    needs_context.write_text("FROM python:3.11-slim\nCOPY --from=build /opt/venv /opt/venv\nCOPY src ./src\n")
    argv = ["--dry-run", "--workspace-build", "--dockerfile", str(needs_context)]
    assert common.run_main(push_image.main, argv) == 2
    err = capsys.readouterr().err
    assert f"{needs_context}:3" in err and "build context" in err


def test_push_refuses_an_image_that_was_not_built(aml, tmp_path, monkeypatch, capsys):
    """No local image: `make build` first, exit 2. Stand-in for Docker: a fake `docker` whose `image inspect` fails."""
    common, push_image = aml.common, aml.push_image
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    args = push_image.build_parser().parse_args(["--tag", "nope"])
    with pytest.raises(common.AmlError, match=r"trainjob:nope is not in the local Docker engine: run `make build`"):
        push_image.push(args, "trainjob:nope", "reg.azurecr.io/trainjob:nope", "reg")


# --- upload-data ------------------------------------------------------------------------------------------------
def test_upload_refuses_a_folder_the_trainer_refuses_before_touching_azure(aml, tmp_path, monkeypatch, capsys):
    """The trainer's DataError becomes one line and exit 2, before the workspace is even loaded. Stand-in for the
    data layer: load_dataset raising the trainer's DataError; for Azure: load_workspace failing the test if called."""
    common, upload_data = aml.common, aml.upload_data
    import trainjob.data
    from trainjob.errors import DataError

    calls = {}

    def refuse(path, **kwargs):
        calls.update(kwargs, path=path)
        raise DataError(f"no dataset found in {path}: expected cifar-10-batches-py/ or <class>/ folders")

    monkeypatch.setattr(trainjob.data, "load_dataset", refuse)
    monkeypatch.setattr(aml.v1, "load_workspace", lambda args: pytest.fail("Azure contacted before the data check"))
    assert common.run_main(upload_data.main, ["--src", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: not uploading {tmp_path}: no dataset found in {tmp_path}: expected "
                   "cifar-10-batches-py/ or <class>/ folders"]
    assert calls == {"path": str(tmp_path), "image_size": 32, "val_fraction": 0.1, "seed": 0, "cache_dir": "off",
                     "demo": False}


def test_upload_check_only_accepts_cifar_batches_with_the_real_data_layer(aml, tmp_path, capsys):
    """--check-only on generated CIFAR batches goes through the trainer's real detection; no Azure is involved."""
    common, upload_data = aml.common, aml.upload_data
    datagen = pytest.importorskip("datagen")
    datagen.write_cifar_batches(tmp_path)
    try:
        code = common.run_main(upload_data.main, ["--src", str(tmp_path), "--check-only"])
    except NotImplementedError:
        pytest.skip("trainjob.data.load_dataset not written yet")
    assert code == 0, capsys.readouterr().err
    assert "cifar" in capsys.readouterr().out


def test_upload_of_an_empty_folder_is_refused_by_the_real_data_layer(aml, tmp_path, capsys):
    """An empty folder: the trainer's own message, exit 2, nothing uploaded (no workspace config even exists)."""
    common, upload_data = aml.common, aml.upload_data
    try:
        code = common.run_main(upload_data.main, ["--src", str(tmp_path), "--config", str(tmp_path / "none.json")])
    except NotImplementedError:
        pytest.skip("trainjob.data.load_dataset not written yet")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: not uploading {tmp_path}: ")


# --- workspace --------------------------------------------------------------------------------------------------
def test_workspace_needs_its_coordinates(aml, tmp_path, capsys):
    """make workspace without a config or flags: what to pass, exit 2, before any SDK call."""
    common, workspace = aml.common, aml.workspace
    assert common.run_main(workspace.main, ["--config", str(tmp_path / ".azureml" / "config.json")]) == 2
    assert "--subscription-id, --resource-group and --workspace-name" in capsys.readouterr().err


def test_workspace_writes_the_config_the_other_scripts_read(aml, tmp_path, monkeypatch, capsys):
    """Get an existing workspace and write .azureml/config.json with the SDK's write_config. Stand-in for the
    service: Workspace.get returning a Workspace built with _disable_service_check."""
    common, workspace = aml.common, aml.workspace
    from azureml.core import Workspace
    from azureml.core.authentication import TokenAuthentication

    def get(name, auth=None, subscription_id=None, resource_group=None, **kwargs):
        offline = TokenAuthentication(lambda resource: pytest.fail("token requested"), cloud="AzureCloud")
        return Workspace(subscription_id, resource_group, name, auth=offline, _disable_service_check=True,
                         _location="westeurope")

    monkeypatch.setattr(Workspace, "get", staticmethod(get))
    monkeypatch.chdir(tmp_path)
    argv = ["--subscription-id", "sub-1", "--resource-group", "rg-1", "--workspace-name", "ws-1"]
    assert common.run_main(workspace.main, argv) == 0
    written = json.loads((tmp_path / ".azureml" / "config.json").read_text())
    assert written["Scope"] == ("/subscriptions/sub-1/resourceGroups/rg-1/providers/"
                                "Microsoft.MachineLearningServices/workspaces/ws-1")
    args = workspace.build_parser().parse_args([])  # what every other script now reads
    assert common.coordinates(args) == {"subscription_id": "sub-1", "resource_group": "rg-1", "workspace_name": "ws-1"}
