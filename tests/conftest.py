"""Shared fixtures. tests/ is on sys.path (rootdir conftest), so tests import helpers as `from datagen import ...`."""

import os
import socket

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
