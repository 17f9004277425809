#!/usr/bin/env python3
"""Register a finished job's model.pt as an Azure ML model (SDK v2), so endpoints and other jobs can name it.

    make register-model AML_ARGS="--job JOB_NAME"              # model trainjob, next version
    make register-model AML_ARGS="--sweep SWEEP_NAME"          # the sweep's best trial
    make register-model AML_ARGS="--job JOB_NAME --name cifar10-net"
    make register-model DRY_RUN=1 AML_ARGS="--job JOB_NAME"    # write build/aml/model.yml; contacts nothing
    make register-model DRY_RUN=1 AML_ARGS="--sweep NAME --trial TRIAL"   # a dry run cannot read the trials: name one

The model is the job's ./outputs/model.pt (what `train predict` and `train export` read), tagged with the job it
came from. A sweep's best trial: of its trials that Completed (jobs.list(parent_job_name=...)), the one whose value of
the sweep's primary metric, as MLflow holds it (a trial's job name is its MLflow run id; the last value logged), is
the highest (the lowest where the sweep's goal is minimize). Exit codes: see common.py.
"""

from __future__ import annotations

import math
import re
import sys

import common
import v2

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")  # Azure ML's rule for asset names


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--job", help="name of the finished job (the Studio URL's last part)")
    which.add_argument("--sweep", help="name of a sweep job (make sweep-aml): register its best trial's model")
    p.add_argument("--trial", help="with --sweep: register this trial instead of the best (a dry run needs it: "
                   "offline, the sweep's trials cannot be read)")
    p.add_argument("--name", default="trainjob", help="model name")
    p.add_argument("--description", default="trainjob image classifier (model.pt)", help="model description")
    p.add_argument("--dry-run", action="store_true", help="write build/aml/model.yml; contact nothing")
    common.add_workspace_args(p)
    return p


def check_names(args) -> None:
    if args.trial and not args.sweep:
        raise common.AmlError("--trial names a trial of a sweep: add --sweep NAME, or pass the job as --job")
    for flag, value in (("--job", args.job), ("--sweep", args.sweep), ("--trial", args.trial), ("--name", args.name)):
        if value is not None and not NAME.match(value):
            raise common.AmlError(f"{flag} {value!r} is not an Azure ML name: letters, digits, '-', '_' and '.', "
                                  "starting with a letter or digit")


def model_entity(args, job: str, tags: dict | None = None):
    v2.import_sdk()
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    # The job's default artifact store holds ./outputs as outputs/...: model.pt is the trainer's result file.
    return Model(name=args.name, type=AssetTypes.CUSTOM_MODEL, description=args.description,
                 path=f"azureml://jobs/{job}/outputs/artifacts/paths/outputs/model.pt",
                 tags={"trainjob.job": job, "trainjob.file": "model.pt", **(tags or {})})


def best_trial(client, sweep_name: str, runs, only: str | None = None) -> tuple[str, str, float]:
    """(trial name, primary metric, its value) of the sweep's best Completed trial, or of `only` if given.
    client: an MLClient; runs: an MLflow client of the workspace (get_run)."""
    sweep = client.jobs.get(sweep_name)
    if sweep.type != "sweep":
        raise common.AmlError(f"job {sweep_name} is a {sweep.type} job, not a sweep: pass it as --job")
    metric, goal = sweep.objective.primary_metric, str(sweep.objective.goal).lower()
    done = [t.name for t in client.jobs.list(parent_job_name=sweep_name) if t.status == "Completed"]
    if only is not None and only not in done:
        raise common.AmlError(f"{only} is not a Completed trial of sweep {sweep_name} (Completed: "
                              f"{', '.join(done) or 'none'})")
    scored = [(value, name) for name in ([only] if only else done)
              if (value := _metric(runs, name, metric)) is not None]
    if not scored:
        raise common.AmlError(f"sweep {sweep_name} ({sweep.status}) has no Completed trial that logged {metric} "
                              f"({len(done)} Completed): wait for a trial to finish, or register one with --job")
    value, name = (min if goal == "minimize" else max)(scored)
    return name, metric, value


def _metric(runs, run_id: str, metric: str) -> float | None:
    from mlflow.exceptions import MlflowException

    try:
        value = runs.get_run(run_id).data.metrics.get(metric)
    except MlflowException:  # a trial MLflow never heard of has nothing to compare
        return None
    return value if value is not None and math.isfinite(value) else None


def mlflow_runs(client):
    """An MLflow client on the workspace's tracking server (azureml-mlflow resolves its azureml:// URI)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise common.AmlError(f"--sweep reads the trials' metrics with MLflow, not installed for {sys.executable} "
                              f"({e.name} missing): run `make venv` (or pip install azureml-mlflow)") from None
    return MlflowClient(tracking_uri=client.workspaces.get(client.workspace_name).mlflow_tracking_uri)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check_names(args)
    if args.dry_run:
        if args.sweep and not args.trial:
            raise common.AmlError(f"a dry run cannot read sweep {args.sweep}'s trials (that needs the workspace): "
                                  "add --trial NAME to write the model of that trial, or leave out DRY_RUN")
        model = model_entity(args, args.trial or args.job, {"trainjob.sweep": args.sweep} if args.sweep else None)
        path = v2.write_yaml(model, "model.yml")
        unchecked = f" (not checked offline: that {args.trial} is a Completed trial of {args.sweep})" \
            if args.sweep else ""
        print(f"wrote {path} (offline, nothing sent): model {model.name} from {model.path}{unchecked}; register "
              f"it with `az ml model create --file {path}`")
        return
    client = v2.ml_client(args)
    if args.sweep:
        trial, metric, value = best_trial(client, args.sweep, mlflow_runs(client), only=args.trial)
        model = model_entity(args, trial, {"trainjob.sweep": args.sweep, f"trainjob.{metric}": f"{value:.6g}"})
        print(f"sweep {args.sweep}: trial {trial} has {metric} {value:.6g}"
              f"{'' if args.trial else ', the best of its Completed trials'}")
    else:
        job = client.jobs.get(args.job)
        if job.status != "Completed":
            raise common.AmlError(f"job {args.job} is {job.status}, not Completed: register the model of a finished "
                                  "job")
        model = model_entity(args, args.job)
    registered = client.models.create_or_update(model)
    print(f"registered model {registered.name} version {registered.version} from job {model.tags['trainjob.job']}")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
