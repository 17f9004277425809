#!/usr/bin/env python3
"""Put the image in the workspace's container registry and register it as an Azure ML environment.

    make build && make push-image                      # docker tag + docker push IMAGE:TAG, then register
    make push-image AML_ARGS=--workspace-build          # let the workspace build docker/Dockerfile instead
    make push-image AML_ARGS=--dry-run                  # print the environment as the SDK serialises it, offline
    make push-image AML_SDK=v2 [DRY_RUN=1]              # register it through azure-ai-ml as trainjob:TAG, with the
                                                       # online endpoint's routes (build/aml/environment.yml)

The environment has user-managed dependencies (Azure ML adds no conda layer) and runs the image's own python,
/opt/venv/bin/python. An image in the workspace's registry needs no credentials: the workspace pulls it with its
identity. For another private registry, give --registry with --registry-username and --registry-password-env (the
password is stored in the environment definition, readable by workspace readers), or a managed identity that has
AcrPull on it (--registry-identity-client-id / --registry-identity-resource-id). Idempotent: pushing the same tag
again is a no-op for Docker, and registering an unchanged definition reuses its version.
Exit codes: see common.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import common
import v1
import v2

ACR_SUFFIX = {"AzureCloud": "azurecr.io", "AzureChinaCloud": "azurecr.cn", "AzureUSGovernment": "azurecr.us"}
# Where an online endpoint finds the Azure ML inference server that the image's entrypoint starts when the endpoint
# runs it (entrypoint/docker-entrypoint.sh): a custom image needs these routes, as Azure ML's custom-container samples
# give them. Readiness is / too: the server answers it only once the scoring script's init() has loaded the model.
SERVER_PORT = 5001
INFERENCE_CONFIG = {"liveness_route": {"path": "/", "port": SERVER_PORT},
                    "readiness_route": {"path": "/", "port": SERVER_PORT},
                    "scoring_route": {"path": "/score", "port": SERVER_PORT}}


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--image", default="trainjob", help="local image name (make build's IMAGE)")
    p.add_argument("--tag", default=None, help="image tag (default: the git commit, as make build tags it)")
    p.add_argument("--environment", default=common.ENVIRONMENT, help="Azure ML environment name to register")
    p.add_argument("--interpreter", default=common.INTERPRETER, help="python inside the image")
    p.add_argument("--registry", help="registry login server (default: the workspace's own registry)")
    p.add_argument("--registry-username", help="user for a private registry other than the workspace's")
    p.add_argument("--registry-password-env", metavar="VAR", help="environment variable holding that password")
    p.add_argument("--registry-identity-client-id", help="managed identity (client ID) that may pull the image")
    p.add_argument("--registry-identity-resource-id", help="managed identity (resource ID) that may pull the image")
    p.add_argument("--skip-push", action="store_true", help="register only: the image is already in the registry")
    p.add_argument("--workspace-build", action="store_true",
                   help="let the workspace build --dockerfile (Environment.from_dockerfile) instead of pushing")
    p.add_argument("--dockerfile", default="docker/Dockerfile", help="Dockerfile for --workspace-build")
    p.add_argument("--dry-run", action="store_true",
                   help="v1: print the environment definition; v2: write build/aml/environment.yml; contact nothing")
    p.add_argument("--sdk", default="v1", choices=["v1", "v2"], help="v1: azureml-core; v2: azure-ai-ml")
    common.add_workspace_args(p)
    return p


def make_environment(name: str, image: str, interpreter: str = common.INTERPRETER, registry=None):
    """The environment the run uses: this image as it is, with its own python. `registry`: a ContainerRegistry."""
    v1.import_sdk()
    from azureml.core import Environment

    env = Environment.from_docker_image(name, image, container_registry=registry)
    env.python.user_managed_dependencies = True  # from_docker_image sets it; stated because the run depends on it
    env.python.interpreter_path = interpreter  # the default, "python", is whatever PATH finds first
    # Environment() puts a placeholder EXAMPLE_ENV_VAR into every run's process; dropped in place because the
    # property's setter logs a deprecation warning.
    env.environment_variables.pop("EXAMPLE_ENV_VAR", None)
    return env


def registry_credentials_given(args) -> bool:
    return bool(args.registry_username or args.registry_identity_client_id or args.registry_identity_resource_id)


def container_registry(args):
    """ContainerRegistry credentials for an external private registry, or None (workspace registry: none needed)."""
    if not registry_credentials_given(args):
        return None
    if not args.registry:
        raise common.AmlError("registry credentials need --registry (the login server they belong to)")
    from azureml.core.container_registry import ContainerRegistry, RegistryIdentity

    reg = ContainerRegistry()
    reg.address = args.registry
    if args.registry_username:
        password = os.environ.get(args.registry_password_env or "", "")
        if not password:
            raise common.AmlError("--registry-username needs --registry-password-env VAR with VAR set to the password")
        reg.username, reg.password = args.registry_username, password
    else:
        reg.registry_identity = RegistryIdentity()
        reg.registry_identity.client_id = args.registry_identity_client_id
        reg.registry_identity.resource_id = args.registry_identity_resource_id
    return reg


def workspace_registry(ws, cloud: str) -> tuple[str, str]:
    """(name, login server) of the registry Azure ML created for the workspace."""
    return registry_of(ws.name, ws.get_details().get("containerRegistry"), cloud)


def registry_of(workspace: str, acr_id: str | None, cloud: str) -> tuple[str, str]:
    """(name, login server) from the registry's ARM id, .../providers/Microsoft.ContainerRegistry/registries/NAME."""
    if not acr_id:
        raise common.AmlError(f"workspace {workspace} has no container registry yet (Azure ML creates it on the "
                              "first image build): run once with --workspace-build, or pass --registry")
    name = acr_id.rstrip("/").rsplit("/", 1)[-1]
    return name, f"{name}.{ACR_SUFFIX[cloud]}"


def docker(*argv: str, stdin: str | None = None) -> None:
    exe = shutil.which("docker")
    if exe is None:
        raise common.AmlError("docker is not on PATH: install Docker, or use --workspace-build")
    print("+ docker " + " ".join(argv), flush=True)
    if subprocess.run([exe, *argv], input=stdin, text=True).returncode != 0:
        raise common.AmlError(f"`docker {argv[0]}` failed (see its output above)")


def push(args, local: str, remote: str, acr_name: str | None) -> None:
    exe = shutil.which("docker")
    if exe is None:
        raise common.AmlError("docker is not on PATH: install Docker, or use --workspace-build")
    if subprocess.run([exe, "image", "inspect", local], capture_output=True).returncode != 0:
        raise common.AmlError(f"image {local} is not in the local Docker engine: run `make build` first")
    if args.registry_username:
        docker("login", args.registry, "--username", args.registry_username, "--password-stdin",
               stdin=os.environ[args.registry_password_env])
    elif acr_name:
        az = shutil.which("az")
        if az is None:
            raise common.AmlError("`az acr login` needs the Azure CLI: install it and run `az login`")
        print(f"+ az acr login --name {acr_name}", flush=True)
        if subprocess.run([az, "acr", "login", "--name", acr_name]).returncode != 0:
            raise common.AmlError(f"`az acr login --name {acr_name}` failed: run `az login`, and check you may push")
    docker("tag", local, remote)
    docker("push", remote)


def workspace_build_environment(args):
    """Environment.from_dockerfile: the workspace builds the Dockerfile itself, with no build context."""
    path = Path(args.dockerfile)
    if not path.is_file():
        raise common.AmlError(f"{path} not found: --workspace-build builds that Dockerfile")
    text = path.read_text()
    # from_dockerfile sends the Dockerfile's text only; COPY/ADD of local files would find nothing to copy.
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*(COPY|ADD)\s", line, re.I) and "--from=" not in line:
            raise common.AmlError(f"{path}:{n} copies files from the build context ({line.strip()}), which "
                                  "--workspace-build does not send: build and push locally (make build push-image)")
    v1.import_sdk()
    from azureml.core import Environment

    env = Environment.from_dockerfile(args.environment, text)
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = args.interpreter
    env.environment_variables.pop("EXAMPLE_ENV_VAR", None)  # as make_environment: no placeholder
    return env


def environment_version(tag: str) -> str:
    """The version push-image registers an image tag under: the tag itself, so the v2 scripts name the environment of
    the image they mean (azureml:trainjob:<tag>) offline, and pushing the same tag again reuses the version."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise common.AmlError(f"--tag {tag!r} cannot be an environment version: letters, digits, '_', '.', '-'")
    return tag


def environment_v2(name: str | None, image: str, version: str | None = None):
    """The image as an azure.ai.ml Environment, as it is: a job's command calls `train` on the image's PATH; an online
    deployment reaches the inference server the entrypoint starts through inference_config. name None: anonymous."""
    v2.import_sdk()
    from azure.ai.ml.entities import Environment

    return Environment(name=name, version=version, image=image, inference_config=INFERENCE_CONFIG,
                       description="trainjob: the image as built by make build")


def add_v2_environment_args(p) -> None:
    """The flags that pick a v2 script's environment (submit.py has --environment and its version for v1 too)."""
    p.add_argument("--environment", default=common.ENVIRONMENT, help="registered environment (make push-image "
                   "AML_SDK=v2)")
    p.add_argument("--environment-version", help="its version (default: --tag, as push-image registers it)")
    p.add_argument("--image-uri", help="run this image as an anonymous environment, not the registered one")
    p.add_argument("--inline-environment", action="store_true", help="run --registry/--image:--tag as an "
                   "anonymous environment, not the registered azureml:--environment:VERSION")


def v2_environment(args, client=None) -> str:
    """The environment of a v2 job or deployment: azureml:NAME:VERSION, the one `make push-image AML_SDK=v2`
    registers (its version is the image tag), checked to exist when a client is given; with --image-uri or
    --inline-environment, the image to run as an anonymous environment (offline: in the labelled --registry)."""
    if args.image_uri:
        return args.image_uri
    tag = args.tag or common.git_sha() or "dev"
    if not args.inline_environment:
        version = args.environment_version or environment_version(tag)
        if client is not None:
            from azure.core.exceptions import ResourceNotFoundError

            try:
                client.environments.get(name=args.environment, version=version)
            except ResourceNotFoundError:
                raise common.AmlError(f"environment {args.environment} version {version} is not registered in the "
                                      f"workspace: run `make push-image AML_SDK=v2 TAG={version}` (or pass "
                                      "--inline-environment)") from None
        return f"azureml:{args.environment}:{version}"
    if client is None:
        return f"{args.registry}/{args.image}:{tag}"
    registry_id = client.workspaces.get(client.workspace_name).container_registry or ""
    if not registry_id:
        raise common.AmlError("the workspace has no container registry yet: run `make push-image` "
                              "(or pass --image-uri)")
    return f"{registry_id.rstrip('/').split('/')[-1]}.azurecr.io/{args.image}:{tag}"


def describe(environment) -> str:
    """An entity's environment in a dry run's summary: the registered one's reference, or the image."""
    return environment if isinstance(environment, str) else f"image {environment.image}"


def main_v2(args, local: str) -> None:
    """Push as v1 does, then register the image as a v2 environment. The workspace pulls it with its own identity;
    a private registry elsewhere needs AcrPull for that identity (v2 environments carry no registry password)."""
    if args.workspace_build or registry_credentials_given(args):
        raise common.AmlError("--workspace-build and registry credentials are v1 flags: with --sdk v2 push the "
                              "image (make build push-image) and give the workspace's identity AcrPull on --registry")
    version = environment_version(local.rsplit(":", 1)[1])
    if args.dry_run:
        env = environment_v2(args.environment, f"{args.registry or 'offline-dry-run.azurecr.io'}/{local}", version)
        path = v2.write_yaml(env, "environment.yml")
        print(f"wrote {path} (offline, nothing sent): environment {env.name} version {env.version}, image "
              f"{env.image}; register it with `az ml environment create --file {path}`")
        return
    client = v2.ml_client(args)
    if args.registry:
        acr_name, server = None, args.registry
    else:
        acr_id = client.workspaces.get(client.workspace_name).container_registry
        acr_name, server = registry_of(client.workspace_name, acr_id, args.cloud)
    remote = f"{server}/{local}"
    if not args.skip_push:
        push(args, local, remote, acr_name)
    registered = client.environments.create_or_update(environment_v2(args.environment, remote, version))
    print(f"registered environment {registered.name} version {registered.version}: {remote}; the v2 scripts use "
          f"it as azureml:{registered.name}:{registered.version} (--tag {version})")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    tag = args.tag or common.git_sha() or "dev"
    local = f"{args.image}:{tag}"
    if args.sdk == "v2":
        main_v2(args, local)
        return
    v1.import_sdk()
    if args.dry_run:
        from azureml.core._serialization_utils import _serialize_to_dict

        if args.workspace_build:
            env = workspace_build_environment(args)
        else:
            registry = args.registry or "offline-dry-run.azurecr.io"  # a label: the workspace's registry is not read
            env = make_environment(args.environment, f"{registry}/{local}", args.interpreter, container_registry(args))
        secrets = [os.environ.get(args.registry_password_env or "", "")]
        print(json.dumps({"dry_run": True, "environment": common.masked(_serialize_to_dict(env), secrets)}, indent=2))
        return
    if args.workspace_build:
        env = workspace_build_environment(args)
        ws = v1.load_workspace(args)
        registered = env.register(ws)
        print(f"registered environment {registered.name} version {registered.version}; building it in the "
              "workspace (several minutes)")
        registered.build(ws).wait_for_completion(show_output=True)
        return
    registry = container_registry(args)
    ws = v1.load_workspace(args)
    acr_name, server = (None, args.registry) if args.registry else workspace_registry(ws, args.cloud)
    remote = f"{server}/{local}"
    if not args.skip_push:
        push(args, local, remote, acr_name)
    registered = make_environment(args.environment, remote, args.interpreter, registry).register(ws)
    print(f"registered environment {registered.name} version {registered.version}: {remote}, "
          f"python {args.interpreter}")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
