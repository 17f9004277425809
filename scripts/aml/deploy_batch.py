#!/usr/bin/env python3
"""Serve a registered model from a batch endpoint (SDK v2): folders of images in, one predictions.csv out.

    make deploy-batch-aml AML_ARGS="--model trainjob:1"          # endpoint trainjob-batch-<workspace key>
    make deploy-batch-aml DRY_RUN=1 AML_ARGS="--model trainjob:1"   # write build/aml/batch-{endpoint,deployment}.yml

The deployment runs the environment `make push-image AML_SDK=v2` registers (azureml:trainjob:<tag>) on cpu-cluster;
Azure ML's batch driver needs azureml-core in the image, so it must be the full image, not VARIANT=v2 or train
(docs/image.md). The scoring script is scripts/aml/serving/batch_score.py, which is
trainjob's own batch scoring script (trainjob/batch/azureml.py): each mini-batch of files goes through the same
code as `train predict`, and each file gets one line of predictions.csv with the columns of `train predict --output
predictions.csv` (no header line; an unreadable file gets a line with its error). Exit codes: see common.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import common
import deploy
import push_image
import submit
import v2

SERVING_DIR = Path(__file__).resolve().parent / "serving"
SCORING_SCRIPT = "batch_score.py"
OUTPUT_FILE = "predictions.csv"


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registered model as NAME:VERSION (make register-model)")
    p.add_argument("--endpoint", help="endpoint name, unique in the Azure region (default: trainjob-batch-<8 hex "
                   "digits of the workspace>, the same on every run)")
    p.add_argument("--deployment", default="trainjob", help="deployment name (made the endpoint's default)")
    p.add_argument("--compute", default=common.COMPUTE_NAME, help="compute cluster that runs the scoring jobs")
    p.add_argument("--instance-count", type=int, default=1, help="nodes per scoring job")
    p.add_argument("--mini-batch-size", type=int, default=128, help="files per run() call (8 of train predict's "
                   "chunks)")
    p.add_argument("--max-retries", type=int, default=3, help="retries of a mini-batch that failed or timed out")
    p.add_argument("--timeout", type=int, default=300, help="seconds one mini-batch may take")
    p.add_argument("--image", default="trainjob", help="image name")
    p.add_argument("--tag", help="image tag (default: the git commit)")
    p.add_argument("--registry", default="offline-dry-run.azurecr.io",
                   help="--dry-run: registry login server (offline, the workspace's registry is not read)")
    push_image.add_v2_environment_args(p)
    p.add_argument("--dry-run", action="store_true", help="write build/aml/batch-endpoint.yml and "
                   "batch-deployment.yml; contact nothing")
    common.add_workspace_args(p)
    return p


def endpoint_name(args) -> str:
    """--endpoint, or a name derived from the workspace: batch endpoint names are unique per region, so a fixed
    default would collide with every other workspace that deployed this project there."""
    name = args.endpoint or f"trainjob-batch-{common.workspace_key(args)}"
    if not deploy.ENDPOINT_NAME.match(name):
        raise common.AmlError(f"--endpoint {name!r} is not an endpoint name: 3-32 letters, digits and '-', starting "
                              "with a letter")
    return name


def check(args) -> None:
    if not deploy.MODEL_REF.match(args.model):
        raise common.AmlError(f"--model {args.model!r} is not NAME:VERSION, e.g. trainjob:1 (make register-model "
                              "prints both)")
    if not deploy.ENDPOINT_NAME.match(args.deployment):
        raise common.AmlError(f"--deployment {args.deployment!r} is not a deployment name: 3-32 letters, digits and "
                              "'-', starting with a letter")
    for flag, value in (("--instance-count", args.instance_count), ("--mini-batch-size", args.mini_batch_size),
                        ("--timeout", args.timeout)):
        if value < 1:
            raise common.AmlError(f"{flag} must be at least 1, got {value}")
    if args.max_retries < 0:
        raise common.AmlError(f"--max-retries must be 0 or more, got {args.max_retries}")


def entities(args, image: str):
    """(BatchEndpoint, ModelBatchDeployment) for the flags; image: submit.v2_image's answer (an environment's
    azureml:NAME:VERSION, or an image)."""
    check(args)
    name = endpoint_name(args)
    v2.import_sdk()
    from azure.ai.ml.constants import BatchDeploymentOutputAction
    from azure.ai.ml.entities import (
        BatchEndpoint,
        BatchRetrySettings,
        CodeConfiguration,
        Environment,
        ModelBatchDeployment,
        ModelBatchDeploymentSettings,
        ResourceConfiguration,
    )

    endpoint = BatchEndpoint(name=name, description="trainjob image classifier: invoke with a folder of images",
                             tags={"trainjob.model": args.model})
    settings = ModelBatchDeploymentSettings(
        mini_batch_size=args.mini_batch_size,
        # One worker per node: the scoring script runs torch on every CPU the node has and decodes ahead in threads.
        max_concurrency_per_instance=1,
        output_action=BatchDeploymentOutputAction.APPEND_ROW, output_file_name=OUTPUT_FILE,
        retry_settings=BatchRetrySettings(max_retries=args.max_retries, timeout=args.timeout),
        # An unreadable image is a line with its error, never a failed item; a failure is a whole mini-batch that
        # crashed or timed out on every retry, and its files would be missing from predictions.csv: stop the job.
        error_threshold=0,
        logging_level="info",
    )
    deployment = ModelBatchDeployment(
        name=args.deployment, endpoint_name=name, model=f"azureml:{args.model}",
        description="trainjob image classifier (the image's own batch scoring script)",
        environment=image if image.startswith("azureml:") else Environment(
            image=image, description="trainjob: the image as built by make build"),
        code_configuration=CodeConfiguration(code=str(SERVING_DIR), scoring_script=SCORING_SCRIPT),
        compute=args.compute, resources=ResourceConfiguration(instance_count=args.instance_count), settings=settings,
    )
    return endpoint, deployment


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check(args)  # the flags' mistakes, before anything signs in
    if args.dry_run:
        endpoint, deployment = entities(args, submit.v2_image(args))
        paths = [v2.write_yaml(endpoint, "batch-endpoint.yml"), v2.write_yaml(deployment, "batch-deployment.yml")]
        print(f"wrote {paths[0]} and {paths[1]} (offline, nothing sent): batch endpoint {endpoint.name}, deployment "
              f"{deployment.name}: model {deployment.model}, {push_image.describe(deployment.environment)}, "
              f"{deployment.resources.instance_count} x {deployment.compute}, {deployment.settings.mini_batch_size} "
              f"files per mini-batch, rows appended to {OUTPUT_FILE}; create them with `az ml batch-endpoint create "
              f"--file {paths[0]}` then `az ml batch-deployment create --file {paths[1]} --set-default`")
        return
    client = v2.ml_client(args)
    endpoint, deployment = entities(args, submit.v2_image(args, client))
    print(f"creating batch endpoint {endpoint.name}", flush=True)
    client.batch_endpoints.begin_create_or_update(endpoint).result()
    print(f"deploying {deployment.model} as {deployment.name} on {deployment.compute} (several minutes)", flush=True)
    client.batch_deployments.begin_create_or_update(deployment).result()
    endpoint.defaults = {"deployment_name": deployment.name}  # what an invoke without --deployment-name runs
    client.batch_endpoints.begin_create_or_update(endpoint).result()
    print(f"ready: az ml batch-endpoint invoke --name {endpoint.name} --input azureml://datastores/"
          f"{common.DEFAULT_DATASTORE}/paths/FOLDER/ --input-type uri_folder  (each image: one line of {OUTPUT_FILE} "
          "in the job's output)")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
