#!/usr/bin/env python3
"""Serve a registered model from a managed online endpoint (SDK v2), with this image and trainjob's scoring script.

    make deploy-aml AML_ARGS="--model trainjob:1"        # endpoint trainjob-<workspace hash>, deployment blue
    make deploy-aml DRY_RUN=1 AML_ARGS="--model trainjob:1"   # write build/aml/endpoint.yml + deployment.yml

The deployment runs the environment `make push-image AML_SDK=v2` registers (azureml:trainjob:<tag>), whose
inference_config routes liveness, readiness (GET /) and scoring (POST /score) to port 5001. Started with no command,
the image's entrypoint starts the Azure ML inference server there with scripts/aml/serving/score.py (trainjob's own
scoring script; --no-code: the copy in the image), so the endpoint answers exactly as `train serve` does locally.
The server's workers and timeouts are the deployment's environment variables (--workers, --request-timeout,
--worker-timeout). The endpoint's default name carries a hash of the workspace: endpoint names are unique per Azure
region. Key authentication; the key is never printed (`az ml online-endpoint get-credentials` shows it).
Exit codes: see common.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import common
import push_image
import v2

SERVING_DIR = Path(__file__).resolve().parent / "serving"
MAX_REQUEST_SECONDS = 180  # a managed online deployment's largest request_timeout_ms is 180,000
ENDPOINT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")  # Azure ML: 3-32 chars, unique per region
MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}:[0-9]+$")


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="registered model as NAME:VERSION (make register-model)")
    p.add_argument("--endpoint", help="endpoint name (3-32 letters, digits, '-'; unique in the region; default: "
                   "trainjob-<8 hex digits of the workspace>)")
    p.add_argument("--deployment", default="blue", help="deployment name")
    p.add_argument("--instance-type", default="Standard_DS3_v2", help="VM size of each instance")
    p.add_argument("--instance-count", type=int, default=1, help="instances behind the endpoint")
    p.add_argument("--workers", type=int, default=1, help="inference server workers per instance, each with its own "
                   "copy of the model and one request at a time")
    p.add_argument("--request-timeout", type=int, default=30, help="seconds one scoring request may take (Azure ML "
                   "allows up to 180)")
    p.add_argument("--worker-timeout", type=int, default=300, help="seconds a server worker may be busy (loading "
                   "the model, scoring) before it is restarted; above --request-timeout")
    p.add_argument("--no-code", action="store_true", help="upload no scoring script: the image's own "
                   "(trainjob/score.py) serves")
    p.add_argument("--image", default="trainjob", help="image name")
    p.add_argument("--tag", help="image tag (default: the git commit)")
    p.add_argument("--registry", default="offline-dry-run.azurecr.io",
                   help="--dry-run: registry login server (offline, the workspace's registry is not read)")
    push_image.add_v2_environment_args(p)
    p.add_argument("--dry-run", action="store_true", help="write build/aml/endpoint.yml and deployment.yml; "
                   "contact nothing")
    common.add_workspace_args(p)
    return p


def endpoint_name(args) -> str:
    """--endpoint, or trainjob-<workspace key>: online endpoint names are unique per Azure region, so a fixed default
    would collide with every other workspace that deployed this project there."""
    name = args.endpoint or f"trainjob-{common.workspace_key(args)}"
    if not ENDPOINT_NAME.match(name):
        raise common.AmlError(f"--endpoint {name!r} is not an endpoint name: 3-32 letters, digits and '-', starting "
                              "with a letter")
    return name


def check(args) -> None:
    """The flags' mistakes, before anything signs in."""
    if not MODEL_REF.match(args.model):
        raise common.AmlError(f"--model {args.model!r} is not NAME:VERSION, e.g. trainjob:1 (make register-model "
                              "prints both)")
    for flag, value in (("--instance-count", args.instance_count), ("--workers", args.workers)):
        if value < 1:
            raise common.AmlError(f"{flag} must be at least 1, got {value}")
    if not 1 <= args.request_timeout <= MAX_REQUEST_SECONDS:
        raise common.AmlError(f"--request-timeout must be 1 to {MAX_REQUEST_SECONDS} seconds (Azure ML's limit), "
                              f"got {args.request_timeout}")
    if args.worker_timeout <= args.request_timeout:
        raise common.AmlError(f"--worker-timeout {args.worker_timeout} must be above --request-timeout "
                              f"{args.request_timeout}: a worker killed mid-request loses the request and reloads")


def server_settings(args) -> dict:
    """The inference server's own settings, as the deployment's environment variables (contract.py names them)."""
    from trainjob import contract

    return {contract.ENV_SERVER_WORKERS: str(args.workers),
            contract.ENV_SERVER_WORKER_TIMEOUT: str(args.worker_timeout),
            contract.ENV_SCORING_TIMEOUT_MS: str(args.request_timeout * 1000)}


def entities(args, environment: str):
    """(ManagedOnlineEndpoint, ManagedOnlineDeployment) for the flags; environment: submit.v2_image's answer."""
    check(args)
    name = endpoint_name(args)
    v2.import_sdk()
    from azure.ai.ml.entities import (
        CodeConfiguration,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        OnlineRequestSettings,
        ProbeSettings,
    )

    endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key", tags={"trainjob.model": args.model},
                                     description="trainjob image classifier: POST an image to /score")
    # A registered environment carries push-image's inference_config; an image gets the same routes inline.
    if not environment.startswith("azureml:"):
        environment = push_image.environment_v2(None, environment)
    code = None if args.no_code else CodeConfiguration(code=str(SERVING_DIR), scoring_script="score.py")
    deployment = ManagedOnlineDeployment(
        name=args.deployment, endpoint_name=name, model=f"azureml:{args.model}", environment=environment,
        code_configuration=code,
        instance_type=args.instance_type, instance_count=args.instance_count,
        environment_variables=server_settings(args),
        # Each worker scores one request at a time; more queued than that only wait. The server's own body limit
        # is contract.DEFAULT_SERVE_MAX_BYTES.
        request_settings=OnlineRequestSettings(request_timeout_ms=args.request_timeout * 1000,
                                               max_concurrent_requests_per_instance=args.workers),
        # Readiness: GET / answers once init() has loaded the model; until then no traffic. Liveness: restart a
        # server that stops answering for 5 minutes.
        readiness_probe=ProbeSettings(initial_delay=10, period=10, timeout=5, success_threshold=1,
                                      failure_threshold=30),
        liveness_probe=ProbeSettings(initial_delay=30, period=10, timeout=5, failure_threshold=30),
    )
    return endpoint, deployment


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    check(args)
    import submit

    if args.dry_run:
        endpoint, deployment = entities(args, submit.v2_image(args))
        paths = [v2.write_yaml(endpoint, "endpoint.yml"), v2.write_yaml(deployment, "deployment.yml")]
        print(f"wrote {paths[0]} and {paths[1]} (offline, nothing sent): endpoint {endpoint.name} (key auth), "
              f"deployment {deployment.name}: model {deployment.model}, "
              f"{push_image.describe(deployment.environment)}, {deployment.instance_count} x "
              f"{deployment.instance_type}, {args.workers} worker(s); create them with `az ml online-endpoint "
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
