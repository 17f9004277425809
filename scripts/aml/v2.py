"""Azure ML SDK v2 (azure-ai-ml): the tutorial's run as a command job, its sweep, checkpoints on the datastore, and
the SDK's errors as one line.

Built from the SDK's own objects (command(), Input, Output, PyTorchDistribution, .sweep()), so the dry run's YAML is
what `az ml job create --file` takes and what the SDK sends. Nothing here runs inside the image.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path

import common

BUILD_DIR = Path("build/aml")
# The job's command: the trainer installed in the image; --tracking mlflow because v2 shows only MLflow metrics.
TRAIN = ("train --data_path ${{inputs.data}} --learning_rate ${{inputs.learning_rate}} "
         "--momentum ${{inputs.momentum}} --checkpoint_dir ${{outputs.checkpoints}} --output_dir ./outputs "
         "--tracking mlflow")
ASSET = re.compile(r"azureml:[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+|@latest)")  # a registered data asset


def import_sdk():
    import logging

    try:
        import azure.ai.ml
    except ImportError as e:
        raise common.AmlError(f"the Azure ML SDK v2 (azure-ai-ml) is not installed for {sys.executable} "
                              f"({e.name} missing): run `make venv` (or pip install 'trainjob[control]')") from None
    # azure-ai-ml logs a warning each time one of its experimental classes is built (a model's schema is one):
    # noise beside the scripts' one-line messages.
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    return azure.ai.ml


def datastore_uri(datastore: str, path: str) -> str:
    return f"azureml://datastores/{datastore}/paths/{path.strip('/')}/"


def data_inputs(args) -> tuple[dict, str]:
    """The job's data inputs and the trainer flags beyond --data_path that read them: a folder on the datastore
    (--data-path), or a registered asset (--data azureml:NAME:VERSION): an MLTable or a uri_file manifest, with the
    datastore its azureml:// URLs point to mounted as --image_root."""
    from azure.ai.ml import Input

    datastore = args.datastore or common.DEFAULT_DATASTORE
    mode = "ro_mount" if args.mode == "mount" else "download"
    asset = getattr(args, "data", None)
    if not asset:
        return {"data": Input(type="uri_folder", path=datastore_uri(datastore, args.data_path), mode=mode)}, ""
    if not ASSET.fullmatch(asset):
        raise common.AmlError(f"--data {asset!r} is not a registered data asset: expected azureml:NAME:VERSION "
                              "(or azureml:NAME@latest), as `az ml data list` names them")
    kind = getattr(args, "data_type", None) or "mltable"
    inputs = {"data": Input(type=kind, path=asset, mode=mode)}
    if kind == "uri_folder":  # class folders or CIFAR: nothing to map
        return inputs, ""
    images = getattr(args, "image_datastore", None) or datastore
    # Always a mount: --mode download would copy the whole datastore, not just the images the manifest names.
    inputs["images"] = Input(type="uri_folder", path=f"azureml://datastores/{images}/paths/", mode="ro_mount")
    return inputs, " --image_root ${{inputs.images}}"


def asset_type(client, asset: str) -> str:
    """The registered type of azureml:NAME:VERSION (or NAME@latest): mltable, uri_file or uri_folder."""
    name, _, version = asset.removeprefix("azureml:").replace("@", ":@").partition(":")
    found = client.data.get(name=name, label="latest") if version == "@latest" else \
        client.data.get(name=name, version=version)
    if found.type not in ("mltable", "uri_file", "uri_folder"):
        raise common.AmlError(f"data asset {asset} is a {found.type}: expected an MLTable, a uri_file manifest or "
                              "a uri_folder")
    return found.type


def run_key(args) -> str:
    """common.run_key with the --data asset in it: two assets never share a checkpoint folder."""
    key = common.run_key(args)
    if args.run_key or not getattr(args, "data", None):
        return key
    what = "\0".join([key, args.data, args.data_type or "", args.image_datastore or ""])
    return hashlib.sha256(what.encode()).hexdigest()[:12]


def command_job(args, image: str, *, sweep_trial: bool = False, rate: str = "learning_rate"):
    """The tutorial's run as an azure.ai.ml command job. rate: the input that carries the learning rate,
    learning_rate or log10_learning_rate (the trainer's flags of the same names)."""
    if args.node_count < 1:
        raise common.AmlError(f"--node-count must be at least 1, got {args.node_count}")
    import_sdk()
    from azure.ai.ml import Output, PyTorchDistribution, command
    from azure.ai.ml.entities import Environment

    datastore = args.datastore or common.DEFAULT_DATASTORE
    key = run_key(args)
    checkpoints = common.checkpoint_path(args, key)
    if sweep_trial:
        checkpoints += "/${{name}}"
    extras = " ".join(_quote(a) for a in args.train_args)
    data, reading = data_inputs(args)
    node = command(
        command=_train_command(rate, sweep_trial) + reading + (f" {extras}" if extras else ""),
        # azureml:NAME:VERSION: the environment push-image registers (submit.v2_image); else an image, anonymously.
        environment=image if image.startswith("azureml:") else Environment(
            image=image, description="trainjob: the image as built by make build"),
        compute=args.compute,
        experiment_name=args.experiment,
        display_name=f"trainjob {args.experiment}",
        inputs={
            **data,
            rate: float(args.learning_rate) if rate == "learning_rate" else math.log10(float(args.learning_rate)),
            "momentum": float(args.momentum),
        },
        outputs={common.CHECKPOINT_OUTPUT: Output(type="uri_folder", path=datastore_uri(datastore, checkpoints),
                                       mode="rw_mount")},
        instance_count=args.node_count,
        distribution=PyTorchDistribution(process_count_per_instance=1) if args.node_count > 1 else None,
        tags={"trainjob.run_key": key},
    )
    return node if sweep_trial else node._to_job()  # a job, not a pipeline step: what `az ml job create` takes


def _train_command(rate: str, sweep_trial: bool) -> str:
    """TRAIN with the learning rate as `rate`. A sweep trial checkpoints into a subfolder named by its sampled
    values: Azure ML documents ${{name}} as "the job name", not whether a sweep's output resolves it per trial, so
    trials could otherwise share (and resume) one folder; the same trial restarted gets the same values, so resumes."""
    command = TRAIN.replace("--learning_rate ${{inputs.learning_rate}}", f"--{rate} ${{{{inputs.{rate}}}}}")
    if sweep_trial:  # the SDK turns ${{inputs.X}} into ${{search_space.X}} for each searched X (Sweep._to_job)
        folder = "-".join(f"{name}_${{{{inputs.{name}}}}}" for name in (rate, "momentum"))
        command = command.replace("${{outputs.checkpoints}}", "${{outputs.checkpoints}}/" + folder)
    return command


# The distributions each sampling method accepts (Azure ML's hyperparameter tuning documentation): grid only
# choice, Bayesian choice, uniform and quniform; random all of them.
SAMPLING_TAKES = {"grid": ("choice",), "bayesian": ("choice", "uniform", "quniform"), "random": None}


def search_space(args) -> dict:
    """The searched inputs, each a distribution --sampling accepts. random: the learning rate log-uniform;
    bayesian: its log10 uniform, passed as --log10_learning_rate; grid: --grid-points values of each, the learning
    rates evenly spaced on a log scale."""
    from azure.ai.ml.sweep import Choice, LogUniform, Uniform

    lo, hi, m_lo, m_hi = args.lr_min, args.lr_max, args.momentum_min, args.momentum_max
    if args.sampling == "grid":
        steps = [i / (args.grid_points - 1) for i in range(args.grid_points)]
        return {"learning_rate": Choice(values=[float(f"{lo * (hi / lo) ** t:.3g}") for t in steps]),
                "momentum": Choice(values=[round(m_lo + (m_hi - m_lo) * t, 4) for t in steps])}
    momentum = Uniform(min_value=m_lo, max_value=m_hi)
    if args.sampling == "bayesian":
        return {"log10_learning_rate": Uniform(min_value=math.log10(lo), max_value=math.log10(hi)),
                "momentum": momentum}
    # LogUniform takes natural-log bounds: the sampled value is exp(uniform(min, max)).
    return {"learning_rate": LogUniform(min_value=math.log(lo), max_value=math.log(hi)), "momentum": momentum}


def sweep_job(args, image: str):
    """The sweep over the learning rate and --momentum, maximising the trainer's MLflow test_accuracy: the SweepJob
    that jobs.create_or_update sends (it turns a sweep node into one the same way, Sweep._to_job)."""
    from azure.ai.ml.sweep import BanditPolicy

    if not 0 < args.lr_min < args.lr_max:
        raise common.AmlError(f"need 0 < --lr-min < --lr-max, got {args.lr_min} and {args.lr_max}")
    if not 0 <= args.momentum_min < args.momentum_max < 1:
        raise common.AmlError(f"need 0 <= --momentum-min < --momentum-max < 1, got {args.momentum_min} and "
                              f"{args.momentum_max}")
    if not 1 <= args.max_concurrent <= args.max_nodes:
        raise common.AmlError(f"--max-concurrent {args.max_concurrent} must be 1 to --max-nodes {args.max_nodes}: "
                              "more trials at once than the cluster has nodes only queue")
    if args.sampling == "grid" and args.grid_points < 2:
        raise common.AmlError(f"--grid-points must be at least 2, got {args.grid_points}")
    space = search_space(args)
    rate = "log10_learning_rate" if "log10_learning_rate" in space else "learning_rate"
    trial = command_job(args, image, sweep_trial=True, rate=rate)
    # Azure ML's Bayesian sampling supports no early termination policy.
    policy = None if args.sampling == "bayesian" else BanditPolicy(slack_factor=args.bandit_slack,
                                                                   evaluation_interval=1, delay_evaluation=1)
    sweep = trial(**space).sweep(compute=args.compute, sampling_algorithm=args.sampling,
                                 primary_metric="test_accuracy", goal="maximize", early_termination_policy=policy)
    sweep.set_limits(max_total_trials=args.max_trials, max_concurrent_trials=args.max_concurrent,
                     timeout=args.timeout_minutes * 60)
    sweep.experiment_name = args.experiment
    sweep.display_name = f"trainjob sweep {args.experiment}"
    sweep.tags = {**trial.tags, "trainjob.sampling": args.sampling}
    return sweep._to_job()


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def write_yaml(job, name: str) -> Path:
    """The job as `az ml job create --file` takes it."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    path = BUILD_DIR / name
    if path.exists():
        path.unlink()  # dump() refuses to overwrite
    spec = job.dump(path)
    if not path.exists():  # ManagedOnlineEndpoint.dump returns its dict without writing it (azure-ai-ml 1.35.2)
        import yaml

        path.write_text(yaml.safe_dump(json.loads(json.dumps(spec)), sort_keys=False))  # OrderedDict -> dict
    return path


def write_sweep_yaml(sweep, name: str = "sweep.yml") -> Path:
    """The SweepJob in the YAML `az ml job create --file` and load_job() take: everything submit sends (experiment,
    display name, tags, search space, limits). A registered environment stays azureml:NAME:VERSION; an inline one
    keeps the documented `image:` form rather than the SDK's anonymous environment name and content hash."""
    import yaml

    path = write_yaml(sweep, name)
    spec = yaml.safe_load(path.read_text())
    environment = spec["trial"]["environment"]
    if isinstance(environment, dict):
        spec["trial"]["environment"] = {"image": environment["image"]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def ml_client(args):
    """MLClient for the workspace in .azureml/config.json (or the flags), signed in as --auth says."""
    c = common.coordinates(args)
    import_sdk()
    from azure.ai.ml import MLClient

    return MLClient(credential(args), c["subscription_id"], c["resource_group"], c["workspace_name"])


def credential(args):
    """The azure-identity credential for --auth (the same choices as the v1 scripts)."""
    from azure.identity import (
        AzureCliCredential,
        EnvironmentCredential,
        InteractiveBrowserCredential,
        ManagedIdentityCredential,
    )

    if args.auth == "interactive":
        return InteractiveBrowserCredential(tenant_id=args.tenant_id)
    return {"cli": AzureCliCredential, "msi": ManagedIdentityCredential, "sp": EnvironmentCredential}[args.auth]()


@common.sdk_errors
def user_error(e: Exception) -> common.AmlError | None:
    """azure-ai-ml and azure-identity: sign-in failures, the service's refusals (HTTP 4xx) and the SDK's own checks."""
    try:
        from azure.ai.ml.exceptions import MlException
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    except ImportError:
        return None
    if isinstance(e, ClientAuthenticationError):
        return common.sign_in_failed(e)
    if isinstance(e, MlException) or (isinstance(e, HttpResponseError) and 400 <= (e.status_code or 0) < 500):
        return common.service_refused(e)
    return None


# Final job statuses (azure.ai.ml JobStatus) and the exit code each maps to (common.py's table).
FINAL_STATUS = {"Completed": common.EXIT_OK, "Failed": common.EXIT_RUN_FAILED, "Canceled": common.EXIT_RUN_FAILED,
                "NotResponding": common.EXIT_RUN_FAILED, "Paused": common.EXIT_RUN_FAILED}


def wait(client, job) -> None:
    try:
        client.jobs.stream(job.name)
    except KeyboardInterrupt:
        print(f"\nstopped watching; job {job.name} goes on: {job.studio_url}", file=sys.stderr)
        raise
    except Exception as e:  # noqa: BLE001 - stream() raises JobException when the job fails; its status says why
        print(f"log stream ended: {common._one_line(e)}", file=sys.stderr)
    status = client.jobs.get(job.name).status
    if FINAL_STATUS.get(status, common.EXIT_RUN_FAILED) != common.EXIT_OK:
        raise common.RunFailed(f"job {job.name} ended {status}: {job.studio_url}")
    print(f"job {job.name} completed: {job.studio_url}")
