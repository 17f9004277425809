#!/usr/bin/env python3
"""Register a finished job's model.pt as an Azure ML model (SDK v2), so endpoints and other jobs can name it.

    make register-model AML_ARGS="--job JOB_NAME"              # model trainjob, next version
    make register-model AML_ARGS="--job JOB_NAME --name cifar10-net"
    make register-model DRY_RUN=1 AML_ARGS="--job JOB_NAME"    # write build/aml/model.yml; contacts nothing

The model is the job's ./outputs/model.pt (what `train predict` and `train export` read), tagged with the job it
came from. Exit codes: see common.py.
"""

from __future__ import annotations

import re
import sys

import common
import v2

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")  # Azure ML's rule for asset names


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--job", required=True, help="name of the finished job (the Studio URL's last part)")
    p.add_argument("--name", default="trainjob", help="model name")
    p.add_argument("--description", default="trainjob image classifier (model.pt)", help="model description")
    p.add_argument("--dry-run", action="store_true", help="write build/aml/model.yml; contact nothing")
    common.add_workspace_args(p)
    return p


def model_entity(args):
    for flag, value in (("--job", args.job), ("--name", args.name)):
        if not NAME.match(value):
            raise common.AmlError(f"{flag} {value!r} is not an Azure ML name: letters, digits, '-', '_' and '.', "
                                  "starting with a letter or digit")
    v2.import_sdk()
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    # The job's default artifact store holds ./outputs as outputs/...: model.pt is the trainer's result file.
    return Model(name=args.name, type=AssetTypes.CUSTOM_MODEL, description=args.description,
                 path=f"azureml://jobs/{args.job}/outputs/artifacts/paths/outputs/model.pt",
                 tags={"trainjob.job": args.job, "trainjob.file": "model.pt"})


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    model = model_entity(args)
    if args.dry_run:
        path = v2.write_yaml(model, "model.yml")
        print(f"wrote {path} (offline, nothing sent): model {model.name} from {model.path}; register it with "
              f"`az ml model create --file {path}`")
        return
    client = v2.ml_client(args)
    job = client.jobs.get(args.job)
    if job.status != "Completed":
        raise common.AmlError(f"job {args.job} is {job.status}, not Completed: register the model of a finished job")
    registered = client.models.create_or_update(model)
    print(f"registered model {registered.name} version {registered.version} from job {args.job}")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
