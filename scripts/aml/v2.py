"""Azure ML SDK v2 (azure-ai-ml): the tutorial's run as a command job, its sweep, checkpoints on the datastore, and
the SDK's errors as one line.

Built from the SDK's own objects (command(), Input, Output, PyTorchDistribution, .sweep()), so the dry run's YAML is
what `az ml job create --file` takes and what the SDK sends. Nothing here runs inside the image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import common

BUILD_DIR = Path("build/aml")
# The job's command: the trainer installed in the image; --tracking mlflow because v2 shows only MLflow metrics.
TRAIN = ("train --data_path ${{inputs.data}} --learning_rate ${{inputs.learning_rate}} "
         "--momentum ${{inputs.momentum}} --checkpoint_dir ${{outputs.checkpoints}} --output_dir ./outputs "
         "--tracking mlflow")


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


def command_job(args, image: str, *, sweep_trial: bool = False):
    """The tutorial's run as an azure.ai.ml command job."""
    if args.node_count < 1:
        raise common.AmlError(f"--node-count must be at least 1, got {args.node_count}")
    import_sdk()
    from azure.ai.ml import Input, Output, PyTorchDistribution, command
    from azure.ai.ml.entities import Environment

    datastore = args.datastore or common.DEFAULT_DATASTORE
    checkpoints = common.checkpoint_path(args)
    if sweep_trial:
        checkpoints += "/${{name}}"
    extras = " ".join(_quote(a) for a in args.train_args)
    node = command(
        command=TRAIN + (f" {extras}" if extras else ""),
        environment=Environment(image=image, description="trainjob: the image as built by make build"),
        compute=args.compute,
        experiment_name=args.experiment,
        display_name=f"trainjob {args.experiment}",
        inputs={
            "data": Input(type="uri_folder", path=datastore_uri(datastore, args.data_path),
                          mode="ro_mount" if args.mode == "mount" else "download"),
            "learning_rate": float(args.learning_rate),
            "momentum": float(args.momentum),
        },
        outputs={common.CHECKPOINT_OUTPUT: Output(type="uri_folder", path=datastore_uri(datastore, checkpoints),
                                       mode="rw_mount")},
        instance_count=args.node_count,
        distribution=PyTorchDistribution(process_count_per_instance=1) if args.node_count > 1 else None,
        tags={"trainjob.run_key": common.run_key(args)},
    )
    return node if sweep_trial else node._to_job()  # a job, not a pipeline step: what `az ml job create` takes


def sweep_job(args, image: str):
    """A sweep over --learning_rate (log-uniform) and --momentum, maximising the trainer's MLflow test_accuracy."""
    import math

    from azure.ai.ml.sweep import BanditPolicy, LogUniform, Uniform

    if not 0 < args.lr_min < args.lr_max:
        raise common.AmlError(f"need 0 < --lr-min < --lr-max, got {args.lr_min} and {args.lr_max}")
    if not 0 <= args.momentum_min < args.momentum_max < 1:
        raise common.AmlError(f"need 0 <= --momentum-min < --momentum-max < 1, got {args.momentum_min} and "
                              f"{args.momentum_max}")
    if not 1 <= args.max_concurrent <= args.max_nodes:
        raise common.AmlError(f"--max-concurrent {args.max_concurrent} must be 1 to --max-nodes {args.max_nodes}: "
                              "more trials at once than the cluster has nodes only queue")
    trial = command_job(args, image, sweep_trial=True)
    # LogUniform takes natural-log bounds: the sampled value is exp(uniform(min, max)).
    space = {"learning_rate": LogUniform(min_value=math.log(args.lr_min), max_value=math.log(args.lr_max)),
             "momentum": Uniform(min_value=args.momentum_min, max_value=args.momentum_max)}
    # Azure ML's Bayesian sampling supports no early termination policy.
    policy = None if args.sampling == "bayesian" else BanditPolicy(slack_factor=args.bandit_slack,
                                                                   evaluation_interval=1, delay_evaluation=1)
    sweep = trial(**space).sweep(compute=args.compute, sampling_algorithm=args.sampling,
                                 primary_metric="test_accuracy", goal="maximize", early_termination_policy=policy)
    sweep.set_limits(max_total_trials=args.max_trials, max_concurrent_trials=args.max_concurrent,
                     timeout=args.timeout_minutes * 60)
    sweep.experiment_name = args.experiment
    sweep.display_name = f"trainjob sweep {args.experiment}"
    return sweep


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
    """The sweep in the YAML form `az ml job create --file` and load_job() take. The SDK dumps a sweep's trial as
    an anonymous component (name, version, inputs, outputs), which its own sweep schema refuses to load back
    (azure-ai-ml 1.35.2); the documented form keeps the trial's command, image and resources, and the command
    reads the searched values as ${{search_space.NAME}}."""
    import yaml

    path = write_yaml(sweep, name)
    spec = yaml.safe_load(path.read_text())
    trial = spec["trial"]
    command = trial["command"]
    for searched in spec["search_space"]:
        command = command.replace(f"${{{{inputs.{searched}}}}}", f"${{{{search_space.{searched}}}}}")
    spec["trial"] = {"command": command, "environment": {"image": trial["environment"]["image"]},
                     **{k: trial[k] for k in ("resources", "distribution", "environment_variables") if k in trial}}
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
