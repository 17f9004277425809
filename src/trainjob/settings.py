"""The contract's environment variables, each read and checked in one place, once, when a command starts.

VARIABLES has one row per variable of contract.py (the README's contract table): what a good value is, and the fix
for a bad one. check(command) applies every row when `train` (on every torchrun rank), predict, evaluate, export,
weights or serve starts, and when the scoring script starts under an Azure ML endpoint ("score"): a bad value is one
line naming the variable, its value and the fix, exit 2, before any work, instead of a crash or a silent default
later. value(name) is the parsed value (or the default) for the code that uses it. Adding a variable is one row.

A value's form is checked whichever command starts, since one environment (an image's ENV, a job's) serves them
all; that a path exists only where the command cannot start without it (the model a scoring script loads). The
data and output folders are left to the data loader and prepare_output_dir, which name the flag too. An empty
variable counts as unset, as everywhere in trainjob. Nothing stricter than what reads the variable accepts: Azure ML
sets many of these itself, and any value it sets passes.
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from trainjob import budget, contract
from trainjob.errors import UserError
from trainjob.text import printable

COMMANDS = ("train", "predict", "evaluate", "export", "weights", "serve", "score")
SHOWN_CHARS = 120  # of a bad value in the error line


def text(value: str) -> str:
    """Any text: a name, an id, or a path that is checked where it is used."""
    return value


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A whole number from minimum (to maximum)."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("is not a whole number") from None
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(f"is outside {minimum} to {maximum}" if maximum is not None else f"is below {minimum}")
        return number

    return parse


# MLflow's own tracking stores (and azureml-mlflow's); a plugin's scheme is looked up in its entry points.
MLFLOW_SCHEMES = frozenset({"file", "http", "https", "azureml", "databricks", "databricks-uc", "uc", "sqlite",
                            "postgresql", "mysql", "mssql"})
NEEDS_HOST = frozenset({"http", "https", "azureml"})


def tracking_uri(value: str) -> str:
    """An MLflow tracking URI: a scheme MLflow knows (a server, azureml://, a database), or a local folder."""
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if not scheme or len(scheme) == 1:  # a local folder (C:\... on Windows): MLflow's file store
        return value
    if scheme.split("+")[0] not in MLFLOW_SCHEMES and not _mlflow_plugin(scheme):
        raise ValueError(f"has a scheme MLflow does not know ({printable(scheme)}:)")
    if scheme in NEEDS_HOST and not parts.netloc:
        raise ValueError("names no host")
    return value


def _mlflow_plugin(scheme: str) -> bool:
    from importlib.metadata import entry_points

    return any(e.name == scheme for e in entry_points(group="mlflow.tracking_store"))


@dataclass(frozen=True)
class Variable:
    name: str
    parse: Callable[[str], object] = text  # its text -> its value; ValueError("is ...") says what is wrong
    fix: str = ""  # the end of its error line: what to set it to
    default: object = None  # value() when it is unset
    must_exist: tuple[str, ...] = ()  # the commands that cannot start unless it names an existing path


_DISTRIBUTED = "set by torchrun and Azure ML's PyTorch distribution: start the processes with torchrun, or unset it"
_SERVER = "read by the inference server (train serve, an online endpoint; make deploy-aml sets it)"
VARIABLES = (
    # Folders checked where they are used, by code that names the flag too (the data loader, prepare_output_dir,
    # the cache and the weights lookups, which go on without theirs).
    Variable(contract.ENV_DATA_PATH),
    Variable(contract.ENV_OUTPUT_DIR),
    Variable(contract.ENV_CACHE_DIR),
    Variable(contract.ENV_WEIGHTS_DIR),
    Variable(contract.ENV_TIME_BUDGET, budget.seconds, "set it to the seconds a training run may take, as "
             "--time_budget takes them (e.g. 600), or unset it"),
    # Names and ids: Azure ML's, the user's, the image build's; any text is one.
    Variable(contract.ENV_AZUREML_RUN_ID),
    Variable(contract.ENV_MLFLOW_RUN_ID),
    Variable(contract.ENV_MLFLOW_EXPERIMENT),
    Variable(contract.ENV_REVISION),
    Variable(contract.ENV_MASTER_ADDR),
    Variable(contract.ENV_AZUREML_ENTRY_SCRIPT),
    Variable(contract.ENV_AML_APP_ROOT),  # the inference server makes do without it (config.json is looked up there)
    Variable(contract.ENV_MLFLOW_URI, tracking_uri, "set it to an MLflow server (http://HOST:5000), azureml://..., "
             "a database URI (sqlite:///mlflow.db) or a local folder, or unset it"),
    Variable(contract.ENV_SERVE_MAX_BYTES, whole(1), "set it to the largest request body train serve takes, in bytes "
             f"(the default is {contract.DEFAULT_SERVE_MAX_BYTES}), or unset it",
             default=contract.DEFAULT_SERVE_MAX_BYTES),
    # The scoring script loads the model from one of these (TRAINJOB_MODEL first, as train serve sets it).
    Variable(contract.ENV_SERVE_MODEL, fix="set it to a model.pt (train serve sets it), or unset it",
             must_exist=("score",)),
    Variable(contract.ENV_AZUREML_MODEL_DIR, fix="set by Azure ML to the registered model's folder: deploy a "
             "registered model (make deploy-aml), or unset it", must_exist=("score",)),
    # Read by the inference server (azmlinfsrv): its worker count and gunicorn's --timeout as whole numbers.
    Variable(contract.ENV_SERVER_WORKERS, whole(1), f"{_SERVER}: set it to the number of workers, from 1, or unset "
             "it (1)", default=1),
    Variable(contract.ENV_SERVER_WORKER_TIMEOUT, whole(0), f"{_SERVER}: set it to the seconds a worker may be silent "
             "(0: no limit), or unset it (300)", default=300),
    Variable(contract.ENV_SCORING_TIMEOUT_MS, whole(1), f"{_SERVER}: set it to the milliseconds one request may "
             "score, from 1, or unset it (3600000)", default=3_600_000),
    Variable(contract.ENV_RANK, whole(0), f"this process's rank, from 0, is {_DISTRIBUTED}", default=0),
    Variable(contract.ENV_WORLD_SIZE, whole(1), f"the number of processes, from 1, is {_DISTRIBUTED}", default=1),
    Variable(contract.ENV_LOCAL_RANK, whole(0), f"the rank on this node, from 0, is {_DISTRIBUTED}", default=0),
    Variable(contract.ENV_LOCAL_WORLD_SIZE, whole(1), f"the processes on this node, from 1, are {_DISTRIBUTED}",
             default=1),
    Variable(contract.ENV_MASTER_PORT, whole(1, 65535), f"rank 0's port, 1 to 65535, is {_DISTRIBUTED}"),
)
BY_NAME = {v.name: v for v in VARIABLES}
NAMES = tuple(BY_NAME)
# (rank, size): a rank is one of size processes; both set by the same launcher, so checked only when both are set.
RANKS = ((contract.ENV_RANK, contract.ENV_WORLD_SIZE), (contract.ENV_LOCAL_RANK, contract.ENV_LOCAL_WORLD_SIZE))


def check(command: str, environ: Mapping[str, str] = os.environ) -> None:
    """Every variable of the contract that is set: a UserError, one line, for the first bad one."""
    assert command in COMMANDS, command
    for variable in VARIABLES:
        raw = environ.get(variable.name)
        if not raw:
            continue
        value(variable.name, environ)
        if command in variable.must_exist and not Path(raw).exists():
            raise _bad(variable, raw, f"names nothing that exists (checked by {command})")
    for rank, size in RANKS:
        if environ.get(rank) and environ.get(size) and value(rank, environ) >= value(size, environ):
            raise UserError(f"environment variable {rank}={printable(environ[rank])} is not below {size}="
                            f"{printable(environ[size])}: ranks count from 0 and are {_DISTRIBUTED}")


def value(name: str, environ: Mapping[str, str] = os.environ):
    """The variable's value, parsed; its default when unset or empty; UserError when it is malformed."""
    variable = BY_NAME[name]
    raw = environ.get(name)
    if not raw:
        return variable.default
    try:
        return variable.parse(raw)
    except ValueError as e:
        raise _bad(variable, raw, str(e)) from None


def _bad(variable: Variable, raw: str, problem: str) -> UserError:
    shown = printable(_without_password(raw))
    if len(shown) > SHOWN_CHARS:
        shown = shown[:SHOWN_CHARS] + "..."
    return UserError(f"environment variable {variable.name}='{shown}' {problem}: {variable.fix}")


def _without_password(raw: str) -> str:
    """A URI's user:password@ left out of the message (MLflow's URI may carry them)."""
    try:
        parts = urlsplit(raw)
        if parts.password is not None:
            return raw.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2], 1)
    except ValueError:
        pass
    return raw
