#!/usr/bin/env python3
"""Score a folder of images with a registered model as an SDK v2 command job on cpu-cluster: `train predict`.

    make score-aml AML_ARGS="--model trainjob:1 --data azureml://datastores/workspaceblobstore/paths/photos/"
    make score-aml AML_ARGS="--model trainjob:1 --data azureml:photos:2"         # a uri_folder data asset
    make score-aml AML_ARGS="--model trainjob:1 --data photos/2026-12"           # a folder on the default datastore
    make score-aml DRY_RUN=1 AML_ARGS="--model trainjob:1 --data photos"         # write build/aml/score-job.yml

The images are mounted read-only, the model is the job's custom_model input, and the job runs `train predict MODEL
IMAGES --output <predictions>/predictions.csv` in the image. The predictions folder is a read-write mount at a
fixed datastore path derived from the model, the data and --top, so a preempted job that Azure ML restarts, or the
same command submitted again, reopens the same file and `train predict` carries on after the rows already there
(no duplicates). Exit codes: see common.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys

import common
import push_image
import submit
import v2

MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}:[0-9]+$")  # NAME:VERSION, Azure ML's asset name rule
DATASTORE_URI = re.compile(r"^azureml://datastores/[A-Za-z0-9_]+/paths/[^\s]+$")
PREDICTIONS_ROOT = "trainjob-predictions"  # <datastore>/trainjob-predictions/<model>/<version>/<data key>/
PREDICTIONS_FILE = "predictions.csv"
# ${{inputs.model}}: the registered model as mounted, a folder or the file (train predict takes either).
PREDICT = ("train predict ${{inputs.model}} ${{inputs.images}} --output ${{outputs.predictions}}/" + PREDICTIONS_FILE
           + " --top ${{inputs.top}} --progress lines")


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registered model as NAME:VERSION (make register-model)")
    p.add_argument("--data", required=True, help="the images: azureml://datastores/NAME/paths/FOLDER, a uri_folder "
                   "data asset azureml:NAME:VERSION, or a folder on --datastore")
    p.add_argument("--datastore", help="datastore of a plain --data folder and of the predictions (default: the "
                   "workspace's default)")
    p.add_argument("--top", type=int, default=3, help="classes per image (train predict --top)")
    p.add_argument("--compute", default=common.COMPUTE_NAME, help="compute target (make compute)")
    p.add_argument("--experiment", default="trainjob-score", help="experiment name")
    p.add_argument("--wait", action="store_true", help="stream the job's log until it ends; exit 3 if it fails")
    p.add_argument("--image", default="trainjob", help="image name")
    p.add_argument("--tag", help="image tag (default: the git commit)")
    p.add_argument("--registry", default="offline-dry-run.azurecr.io",
                   help="--dry-run: registry login server (offline, the workspace's registry is not read)")
    push_image.add_v2_environment_args(p)
    p.add_argument("--dry-run", action="store_true", help="write build/aml/score-job.yml; contact nothing")
    common.add_workspace_args(p)
    return p


def data_path(args) -> str:
    """--data as the path of a uri_folder input; AmlError for anything else."""
    data = args.data.strip()
    if data.startswith("azureml://"):
        if not DATASTORE_URI.match(data):
            raise common.AmlError(f"--data {args.data!r} is not azureml://datastores/NAME/paths/FOLDER")
        return data.rstrip("/") + "/"
    if data.startswith("azureml:"):
        # A pinned version only: the predictions path is derived from it, and @latest would move under a rerun.
        if not MODEL_REF.match(data[len("azureml:"):]):
            raise common.AmlError(f"--data {args.data!r} is not a data asset azureml:NAME:VERSION (a version "
                                  "number, so a rerun scores the same images into the same file)")
        return data
    if not data.strip("/") or "://" in data or ".." in data.split("/") or re.search(r"\s", data):
        raise common.AmlError(f"--data {args.data!r} is not a folder on the datastore, azureml://datastores/... "
                              "or azureml:NAME:VERSION")
    return v2.datastore_uri(args.datastore or common.DEFAULT_DATASTORE, data)


def predictions_path(args, images: str) -> str:
    """Fixed datastore folder of the predictions: the same model, data and --top always get the same file."""
    name, version = args.model.split(":")
    key = hashlib.sha256(json.dumps({"data": images, "top": args.top}).encode()).hexdigest()[:12]
    return "/".join([PREDICTIONS_ROOT, name, version, key])


def check(args) -> str:
    """The flags' mistakes, before anything signs in; returns the images' input path."""
    if not MODEL_REF.match(args.model):
        raise common.AmlError(f"--model {args.model!r} is not NAME:VERSION, e.g. trainjob:1 (make register-model "
                              "prints both)")
    if args.top < 1:
        raise common.AmlError(f"--top must be at least 1, got {args.top}")
    return data_path(args)


def score_job(args, image: str):
    """The scoring run as an azure.ai.ml command job."""
    images = check(args)
    v2.import_sdk()
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import Environment

    datastore = args.datastore or common.DEFAULT_DATASTORE
    node = command(
        command=PREDICT,
        # azureml:NAME:VERSION: the environment push-image registers (submit.v2_image); else an image, anonymously.
        environment=image if image.startswith("azureml:") else Environment(
            image=image, description="trainjob: the image as built by make build"),
        compute=args.compute,
        experiment_name=args.experiment,
        display_name=f"trainjob score {args.model}",
        inputs={"model": Input(type="custom_model", path=f"azureml:{args.model}", mode="ro_mount"),
                "images": Input(type="uri_folder", path=images, mode="ro_mount"),
                "top": args.top},
        outputs={"predictions": Output(type="uri_folder", mode="rw_mount",
                                       path=v2.datastore_uri(datastore, predictions_path(args, images)))},
        tags={"trainjob.model": args.model, "trainjob.data": images},
    )
    return node._to_job()  # a job, not a pipeline step: what `az ml job create` takes


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check(args)
    if args.dry_run:
        job = score_job(args, submit.v2_image(args))
        path = v2.write_yaml(job, "score-job.yml")
        print(f"wrote {path} (offline, nothing sent): command job on {args.compute}, "
              f"{push_image.describe(job.environment)}, "
              f"model {job.inputs['model'].path}, images {job.inputs['images'].path} (ro_mount), predictions "
              f"{job.outputs['predictions'].path}{PREDICTIONS_FILE} (rw_mount); submit it with `az ml job create "
              f"--file {path}`")
        return
    client = v2.ml_client(args)
    job = client.jobs.create_or_update(score_job(args, submit.v2_image(args, client)))
    print(f"submitted job {job.name} (experiment {args.experiment}); predictions: "
          f"{job.outputs['predictions'].path}{PREDICTIONS_FILE}")
    print(f"Studio: {job.studio_url}", flush=True)
    if args.wait:
        v2.wait(client, job)


if __name__ == "__main__":
    sys.exit(common.run_main(main))
