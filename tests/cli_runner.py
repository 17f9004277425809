"""Run the real `train` CLI the way a user does, and read back what it leaves in the output folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    # TRAINJOB_REVISION too: a run from this checkout must record the checkout's commit.
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_PATH", "OUTPUT_DIR", "AZUREML_RUN_ID", "RANK",
                                                            "WORLD_SIZE", "LOCAL_RANK", "TRAINJOB_REVISION")
           and not k.startswith("MLFLOW_")}
    env["TRAINJOB_CACHE_DIR"] = extra.pop("TRAINJOB_CACHE_DIR", "off")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_train(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
              command: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m trainjob ARGS` (or command + ARGS); stdout and stderr captured as text."""
    cmd = (command or [sys.executable, "-m", "trainjob"]) + [str(a) for a in args]
    return subprocess.run(cmd, cwd=cwd or REPO, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_torchrun(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m trainjob ARGS` as two processes on this machine under torchrun (gloo), like run_train."""
    return run_train("--standalone", "--nproc_per_node", "2", "-m", "trainjob", *args, env=env, timeout=timeout,
                     command=[sys.executable, "-m", "torch.distributed.run"])


def checkout_revision() -> str | None:
    """This checkout's commit as git itself says it (the oracle for trainjob.version), "-dirty" when tracked files
    changed; None where there is no git or no checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()

    try:
        head = git("rev-parse", "--verify", "HEAD")
        return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def summary(output_dir: Path) -> dict:
    return json.loads((Path(output_dir) / "summary.json").read_text())


def weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(output_dir) / "model.pt", weights_only=True)["state_dict"]


def assert_user_error(result: subprocess.CompletedProcess, *phrases: str) -> str:
    """Exit 2, one line on stderr naming the problem, no traceback; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    return assert_one_error_line(result.returncode, result.stderr, *phrases)


def assert_one_error_line(code: int, stderr: str, *phrases: str) -> str:
    """Exit 2 and stderr is one `error: ...` line holding every phrase, no traceback; returns that line."""
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]
