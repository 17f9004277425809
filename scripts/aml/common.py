"""What every Azure ML control script shares: the tutorial's names, the workspace flags and config, and run_main.

These scripts run on your machine and drive Azure ML. They never run inside the image, and the training package never
imports them. Every Azure call happens inside main(); importing a script does nothing. The folder:

    common.py        what both SDKs share: the tutorial's names, workspace flags and config, checkpoint paths, run_main
    v1.py            SDK v1 (azureml-core, the tutorial's and the default): sign-in, the workspace, its errors
    v2.py            SDK v2 (azure-ai-ml): MLClient, the command job, the sweep, YAML for the dry runs, its errors
    workspace.py compute.py upload_data.py push_image.py submit.py    one per make target; --sdk v1 | v2
    sweep.py register_model.py deploy.py score_job.py deploy_batch.py SDK v2 only
    launcher/        the v1 run's entry script;  serving/  the online and batch endpoints' scoring scripts

Imports go one way. common.py imports no other script. v1.py and v2.py import only common.py; each maps its own SDK's
exceptions to one-line errors (its user_error, marked @common.sdk_errors, which run_main asks once it is imported).
A make-target script imports the SDK modules it uses at its top, so their mappings are in place before main() runs.
sweep.py, deploy.py, score_job.py and deploy_batch.py build on submit.py, and submit.py on push_image.py.

Exit codes (the same for every script in scripts/aml/):
    0    done
    1    internal error: a traceback follows, please report it
    2    something you can fix: missing .azureml/config.json, not signed in, SDK not installed, bad data, bad flag
    3    the Azure ML run ended Failed or Canceled (submit.py --wait); its status and log path are printed
    130  stopped with Ctrl-C (a submitted run keeps running; its Studio URL was printed)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

# --- Tutorial values (https://learn.microsoft.com/azure/machine-learning/tutorial-1st-experiment-bring-data) -------
CONFIG_FILE = ".azureml/config.json"  # written by `make workspace` (Workspace.write_config)
COMPUTE_NAME = "cpu-cluster"
VM_SIZE = "STANDARD_D2_V2"
MIN_NODES = 0
MAX_NODES = 4
IDLE_SECONDS = 2400  # seconds idle before the cluster scales down to MIN_NODES
DATASTORE_PATH = "datasets/cifar10"  # folder on the default datastore the data is uploaded to and mounted from
EXPERIMENT = "day1-experiment-data"
INPUT_NAME = "input"  # the dataset's name inside the run: as_named_input('input')
CHECKPOINT_ROOT = "trainjob-checkpoints"  # <datastore>/trainjob-checkpoints/<experiment>/<run key>/
CHECKPOINT_OUTPUT = "checkpoints"  # the named output bound to the trainer's --checkpoint_dir (v1 and v2)

# --- This project's image ---------------------------------------------------------------------------------------
ENVIRONMENT = "trainjob"  # Azure ML environment name; names starting with AzureML or Microsoft are reserved
INTERPRETER = "/opt/venv/bin/python"  # the image's venv python, which has trainjob and azureml-core installed
DEFAULT_DATASTORE = "workspaceblobstore"  # Azure ML's default datastore name; used offline by --dry-run

# --- Exit codes (1, an internal error, is Python's own: run_main lets the traceback through) ----------------------
EXIT_OK = 0
EXIT_USER = 2
EXIT_RUN_FAILED = 3
EXIT_INTERRUPTED = 130

CLOUDS = ("AzureCloud", "AzureChinaCloud", "AzureUSGovernment")


class AmlError(Exception):
    """Something the user can fix. Printed as one line, without a traceback."""

    exit_code = EXIT_USER


class NotSignedIn(AmlError):
    pass


class RunFailed(AmlError):
    exit_code = EXIT_RUN_FAILED


# --- Flags --------------------------------------------------------------------------------------------------------
def add_workspace_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("workspace and sign-in (flags override the values in the config file)")
    g.add_argument("--config", default=CONFIG_FILE, help="workspace config file written by `make workspace`")
    g.add_argument("--subscription-id", help="Azure subscription ID")
    g.add_argument("--resource-group", help="resource group of the workspace")
    g.add_argument("--workspace-name", help="Azure ML workspace name")
    g.add_argument("--auth", default="cli", choices=["cli", "interactive", "msi", "sp"],
                   help="cli: your `az login`; interactive: browser sign-in; msi: the machine's managed identity; "
                   "sp: service principal from AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET")
    g.add_argument("--tenant-id", help="tenant to sign in to (interactive)")
    g.add_argument("--cloud", default="AzureCloud", choices=CLOUDS, help="Azure cloud")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, unless there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=_Help)


# --- Workspace coordinates (both SDKs read .azureml/config.json) -------------------------------------------------
def coordinates(args, *, required: bool = True) -> dict | None:
    """Subscription, resource group and workspace name: flags over the config file. None if neither gives all."""
    found = {}
    path = Path(args.config)
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise AmlError(f"{path} is not valid JSON ({e}): rerun `make workspace` to rewrite it") from None
        if found.get("Scope"):  # Workspace.write_config's form: an ARM scope
            parts = found["Scope"].split("/")  # /subscriptions/S/resourceGroups/R/providers/P/workspaces/W
            found = {"subscription_id": parts[2], "resource_group": parts[4], "workspace_name": parts[8]}
    coords = {
        "subscription_id": args.subscription_id or found.get("subscription_id"),
        "resource_group": args.resource_group or found.get("resource_group"),
        "workspace_name": args.workspace_name or found.get("workspace_name"),
    }
    if all(coords.values()):
        return coords
    if not required:
        return None
    if not path.is_file():
        raise AmlError(f"no workspace config: {path} not found; run `make workspace` to write it "
                       "(or pass --subscription-id, --resource-group and --workspace-name)")
    missing = ", ".join(k for k, v in coords.items() if not v)
    raise AmlError(f"{path} lacks {missing}: rerun `make workspace` or pass the matching flag")


def masked(value, secrets: list[str]):
    """value (JSON-like) with every occurrence of each secret replaced by ***: dry runs print what would be sent,
    and people paste that output into CI logs and issues."""
    if isinstance(value, dict):
        return {k: masked(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, "***")
    return value


# --- Checkpoints that outlive the node (v1 and v2) ------------------------------------------------------------------
def run_key(args) -> str:
    """What makes two submissions the same training: the data and every trainer setting. The same command submitted
    again gets the same key, so it resumes from the same checkpoint folder; --run-key names one explicitly."""
    if args.run_key:
        return args.run_key
    what = {"data": [args.datastore or DEFAULT_DATASTORE, args.data_path], "lr": args.learning_rate,
            "momentum": args.momentum, "nodes": args.node_count, "train_args": list(args.train_args)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_path(args, key: str | None = None) -> str:
    """Fixed datastore path of the run's checkpoints: <root>/<experiment>/<run key>. Azure ML restarts a preempted
    job with the same outputs, and a resubmitted command has the same key, so either finds its checkpoint there (a
    sweep adds each trial's name)."""
    return "/".join([CHECKPOINT_ROOT, args.experiment, key or run_key(args)])


def workspace_key(args) -> str:
    """8 hex digits naming the workspace (flags over the config file), the same on every run: a default name that
    must be unique in its Azure region (an endpoint's) carries it, so two workspaces never claim the same name and a
    rerun finds its own. With no workspace known (a dry run without a config) it is the key of 'offline-dry-run'."""
    c = coordinates(args, required=False)
    what = "/".join(c[k].lower() for k in ("subscription_id", "resource_group", "workspace_name")) if c \
        else "offline-dry-run"
    return hashlib.sha256(what.encode()).hexdigest()[:8]


def git_sha(short: bool = True) -> str | None:
    cmd = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


# --- Error mapping ------------------------------------------------------------------------------------------------
_SDK_ERRORS = []  # v1.user_error and v2.user_error: each SDK module adds its own mapping when it is imported


def sdk_errors(mapper):
    """Decorator for an SDK module's user_error(e): its own exceptions as an AmlError, None for any other. run_main
    asks every mapping imported, so common.py needs neither SDK module."""
    _SDK_ERRORS.append(mapper)
    return mapper


def sign_in_failed(e: Exception) -> NotSignedIn:
    """An SDK's failed sign-in as one line."""
    return NotSignedIn(f"Azure sign-in failed ({_sdk_message(e)}): run `az login` (or pass --auth interactive)")


def service_refused(e: Exception) -> AmlError:
    """The service's refusal, or an SDK's own check, as one line."""
    return AmlError(f"Azure ML: {_sdk_message(e)} (AML_DEBUG=1 shows the traceback)")


def _sdk_message(e: Exception) -> str:
    return _one_line(getattr(e, "message", None) or e)


def _user_error_in_chain(exc: BaseException) -> AmlError | None:
    """Our AmlError, even when the SDK wrapped it (as __cause__, __context__ or its inner_exception)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, AmlError):
            return exc
        exc = exc.__cause__ or getattr(exc, "inner_exception", None) or exc.__context__
    return None


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def run_main(main, argv=None) -> int:
    """Call main(argv); a user error becomes one line on stderr and its exit code. Internal errors keep tracebacks."""
    try:
        main(argv)
        return EXIT_OK
    except KeyboardInterrupt:
        print("stopped (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        mine = _user_error_in_chain(e)
        if mine is None:
            mine = _sdk_user_error(e)
        if mine is None:
            raise
        print(f"error: {mine}", file=sys.stderr)
        return mine.exit_code


def _sdk_user_error(e: Exception) -> AmlError | None:
    """The SDKs' own user-facing exceptions as one line. Anything else is ours to fix and keeps its traceback."""
    if os.environ.get("AML_DEBUG"):
        return None
    for mapper in _SDK_ERRORS:
        mine = mapper(e)
        if mine is not None:
            return mine
    return None
