#!/usr/bin/env python3
"""Serve a registered model from a managed online endpoint (SDK v2), with this image and trainjob's scoring script.

    make deploy-aml AML_ARGS="--model trainjob:1"        # endpoint trainjob-<workspace hash>, deployment blue
    make deploy-aml DRY_RUN=1 AML_ARGS="--model trainjob:1"   # write build/aml/endpoint.yml + deployment.yml

The deployment runs the image (make push-image) with scripts/aml/serving/score.py, which is trainjob's own scoring
script: the Azure ML inference server answers GET / and POST /score exactly as `train serve` does locally. The
endpoint uses key authentication; the key is never printed (`az ml online-endpoint get-credentials` shows it).
Exit codes: see common.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import common
import v2

SERVING_DIR = Path(__file__).resolve().parent / "serving"
ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")  # Azure ML: 3-32 chars, unique per region
MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}:[0-9]+$")


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registered model as NAME:VERSION (make register-model)")
    p.add_argument("--endpoint", default="trainjob", help="endpoint name (3-32 letters, digits, '-'; unique in "
                   "the region)")
    p.add_argument("--deployment", default="blue", help="deployment name")
    p.add_argument("--instance-type", default="Standard_DS3_v2", help="VM size of each instance")
    p.add_argument("--instance-count", type=int, default=1, help="instances behind the endpoint")
    p.add_argument("--image", default="trainjob", help="image name")
    p.add_argument("--tag", help="image tag (default: the git commit)")
    p.add_argument("--image-uri", help="the image to run (default: <workspace registry>/--image:--tag)")
    p.add_argument("--registry", default="offline-dry-run.azurecr.io",
                   help="--dry-run: registry login server (offline, the workspace's registry is not read)")
    p.add_argument("--dry-run", action="store_true", help="write build/aml/endpoint.yml and deployment.yml; "
                   "contact nothing")
    common.add_workspace_args(p)
    return p


def entities(args, image: str):
    """(ManagedOnlineEndpoint, ManagedOnlineDeployment) for the flags."""
    if not ENDPOINT_NAME.match(args.endpoint):
        raise common.AmlError(f"--endpoint {args.endpoint!r} is not an endpoint name: 3-32 letters, digits and '-', "
                              "starting with a letter")
    if not MODEL_REF.match(args.model):
        raise common.AmlError(f"--model {args.model!r} is not NAME:VERSION, e.g. trainjob:1 (make register-model "
                              "prints both)")
    if args.instance_count < 1:
        raise common.AmlError(f"--instance-count must be at least 1, got {args.instance_count}")
    v2.import_sdk()
    from azure.ai.ml.entities import (
        CodeConfiguration,
        Environment,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        OnlineRequestSettings,
        ProbeSettings,
    )

    endpoint = ManagedOnlineEndpoint(name=args.endpoint, auth_mode="key",
                                     description="trainjob image classifier: POST an image to /score",
                                     tags={"trainjob.model": args.model})
    deployment = ManagedOnlineDeployment(
        name=args.deployment, endpoint_name=args.endpoint, model=f"azureml:{args.model}",
        environment=Environment(image=image, description="trainjob: the image as built by make build"),
        code_configuration=CodeConfiguration(code=str(SERVING_DIR), scoring_script="score.py"),
        instance_type=args.instance_type, instance_count=args.instance_count,
        # One image per request is small; the server's own body limit is contract.DEFAULT_SERVE_MAX_BYTES.
        request_settings=OnlineRequestSettings(request_timeout_ms=30_000, max_concurrent_requests_per_instance=1),
        liveness_probe=ProbeSettings(initial_delay=30, period=10, timeout=5, failure_threshold=30),
    )
    return endpoint, deployment


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    import submit

    if args.dry_run:
        endpoint, deployment = entities(args, submit.v2_image(args))
        paths = [v2.write_yaml(endpoint, "endpoint.yml"), v2.write_yaml(deployment, "deployment.yml")]
        print(f"wrote {paths[0]} and {paths[1]} (offline, nothing sent): endpoint {endpoint.name} (key auth), "
              f"deployment {deployment.name}: model {deployment.model}, image {deployment.environment.image}, "
              f"{deployment.instance_count} x {deployment.instance_type}; create them with `az ml online-endpoint "
              f"create --file {paths[0]}` then `az ml online-deployment create --file {paths[1]} --all-traffic`")
        return
    client = v2.ml_client(args)
    endpoint, deployment = entities(args, submit.v2_image(args, client))
    print(f"creating endpoint {endpoint.name} (a minute or two)", flush=True)
    client.online_endpoints.begin_create_or_update(endpoint).result()
    print(f"deploying {deployment.model} as {deployment.name} on {deployment.instance_count} x "
          f"{deployment.instance_type} (several minutes)", flush=True)
    client.online_deployments.begin_create_or_update(deployment).result()
    endpoint.traffic = {deployment.name: 100}
    live = client.online_endpoints.begin_create_or_update(endpoint).result()
    print(f"live: {live.scoring_uri} (key: `az ml online-endpoint get-credentials --name {endpoint.name}`); "
          f"curl -H 'Authorization: Bearer KEY' --data-binary @cat.jpg {live.scoring_uri}")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
