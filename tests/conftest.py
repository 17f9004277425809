"""Shared fixtures. tests/ is on sys.path (rootdir conftest), so tests import helpers as `from datagen import ...`."""

import importlib
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client for a running engine. No engine: skip, or fail when TRAINJOB_REQUIRE_DOCKER=1 (CI)."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        message = f"no Docker engine answers ({e}); scripts/docker/start_engine.sh starts one"
        if os.environ.get("TRAINJOB_REQUIRE_DOCKER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture
def two_threads():
    """Torch on at most two threads, as on the 2-core machines the figures come from; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_network(monkeypatch):
    """Fail any Python-level connection: the Azure ML tests must never reach the service."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network call attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)



LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail any connection that leaves the machine: a test talking to a server it started on loopback (Azurite)
    can still never reach Azure."""
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self, address):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            raise AssertionError(f"network call attempted: {address}")
        return connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise AssertionError(f"name lookup attempted: {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    """One small model per recipe, trained by the real CLI on the same generated image folders (3 classes, mixed
    sizes, PNG and JPEG): {recipe: model.pt}, and the folders under "data"."""
    from cli_runner import run_train
    from datagen import write_image_folders

    data = write_image_folders(tmp_path_factory.mktemp("photos"), classes=("cat", "dog", "ship"), per_class_train=10,
                               per_class_test=6, size=[(48, 40), (40, 56)], extensions=(".png", ".jpg"))
    flags = {"tutorial": ["--epochs", "3"], "fast": ["--recipe", "fast", "--epochs", "2"],
             "transfer": ["--recipe", "transfer", "--image_size", "64", "--epochs", "3"]}
    models = {"data": data}
    for recipe, extra in flags.items():
        out = tmp_path_factory.mktemp(recipe) / "o"
        result = run_train("--data_path", data, "--output_dir", out, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        models[recipe] = out / "model.pt"
    return models


AML_SCRIPTS = ("common", "v1", "v2", "compute", "deploy", "push_image", "register_model", "submit", "sweep",
               "upload_data", "workspace")


@pytest.fixture(scope="session")
def aml():
    """The Azure ML control scripts (scripts/aml/) as modules, e.g. aml.submit; the slow SDK import happens once."""
    pytest.importorskip("azureml.core")
    folder = str(Path(__file__).resolve().parents[1] / "scripts" / "aml")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return SimpleNamespace(**{name: importlib.import_module(name) for name in AML_SCRIPTS})
