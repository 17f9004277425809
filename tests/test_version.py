"""code_version: the image's revision, else a git checkout's commit (dirty or not), else "unknown", never a failure."""

import os
import subprocess
import time

import pytest

import trainjob
from trainjob import contract, version
from trainjob.export import metadata


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No revision from the environment, and no value cached by another test."""
    monkeypatch.delenv(contract.ENV_REVISION, raising=False)
    version.code_version.cache_clear()
    yield
    version.code_version.cache_clear()


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_image_revision_wins(monkeypatch):
    monkeypatch.setenv(contract.ENV_REVISION, "0123abc")
    assert version.code_version() == "0123abc"


def test_an_image_built_without_a_revision_says_unknown_and_the_package_version(monkeypatch, tmp_path):
    monkeypatch.setenv(contract.ENV_REVISION, "unknown")  # docker/Dockerfile's default
    monkeypatch.setenv("PATH", str(tmp_path))  # no git either: the same answer, no error
    assert version.code_version() == f"unknown-{trainjob.__version__}"


def test_a_checkout_is_its_commit_and_dirty_only_when_tracked_files_changed(tmp_path):
    (tmp_path / "tracked.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "tracked.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert version._git_revision(tmp_path) == head
    (tmp_path / "scratch.txt").write_text("untracked\n")
    assert version._git_revision(tmp_path) == head
    (tmp_path / "tracked.py").write_text("x = 2\n")
    assert version._git_revision(tmp_path) == f"{head}-dirty"


def test_not_a_checkout_or_no_commit_yet_is_none(tmp_path):
    assert version._git_revision(tmp_path) is None
    git(tmp_path, "init", "-q")
    assert version._git_revision(tmp_path) is None


def test_a_hung_git_is_given_up_on(monkeypatch, tmp_path):
    (tmp_path / ".git").mkdir()
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(version, "GIT_TIMEOUT_S", 0.2)
    started = time.monotonic()
    assert version._git_revision(tmp_path) is None
    assert time.monotonic() - started < 5


def test_onnx_metadata_has_no_code_version_for_a_model_that_did_not_record_one():
    saved = {"classes": ["a"], "image_size": 32, "normalization": {"mean": [0.5], "std": [0.5]}, "recipe": "x"}
    assert "code_version" not in metadata(saved)
    assert metadata({**saved, "code_version": "abc"})["code_version"] == "abc"
