#!/usr/bin/env python3
"""Create or get the Azure ML workspace and write .azureml/config.json (tutorial part 1, 01-create-workspace.py).

    make workspace AML_ARGS="--subscription-id ID --resource-group RG --workspace-name NAME --location westeurope"
    make workspace AML_SDK=v2 AML_ARGS="..."    # the same through azure-ai-ml (MLClient.workspaces)
    make workspace AML_SDK=v2 DRY_RUN=1 AML_ARGS="..."   # write build/aml/workspace.yml; contact nothing

Idempotent: an existing workspace is reused (never modified) and the config file rewritten. Without --location the
workspace must already exist. Exit codes: see common.py (0 done, 1 internal, 2 fix on your side).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import common
import v1
import v2


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    common.add_workspace_args(p)
    p.add_argument("--location", help="Azure region to create the workspace in (e.g. westeurope); "
                   "without it the workspace must exist")
    p.add_argument("--sdk", default="v1", choices=["v1", "v2"], help="v1: azureml-core; v2: azure-ai-ml")
    p.add_argument("--dry-run", action="store_true", help="v2: write build/aml/workspace.yml; contact nothing")
    return p


def main_v2(args, c: dict) -> None:
    v2.import_sdk()
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Workspace
    from azure.core.exceptions import ResourceNotFoundError

    wanted = Workspace(name=c["workspace_name"], location=args.location, resource_group=c["resource_group"],
                       description="trainjob: the tutorial's workspace")
    if args.dry_run:
        path = v2.write_yaml(wanted, "workspace.yml")
        print(f"wrote {path} (offline, nothing sent): workspace {wanted.name} in {wanted.resource_group} "
              f"({wanted.location or 'existing: no --location'}); create it with `az ml workspace create --file "
              f"{path}`")
        return
    client = MLClient(v2.credential(args), c["subscription_id"], c["resource_group"])
    try:
        ws = client.workspaces.get(c["workspace_name"])
    except ResourceNotFoundError:
        if not args.location:
            raise common.AmlError(f"workspace {c['workspace_name']} not found in {c['resource_group']}: pass "
                                  "--location to create it") from None
        print(f"creating workspace {wanted.name} in {wanted.resource_group} ({args.location}); a few minutes")
        ws = client.workspaces.begin_create(wanted).result()
    write_config(ws, Path(args.config), subscription_id=c["subscription_id"])
    print(f"workspace {ws.name} ({ws.location}) in {ws.resource_group}; config written to {args.config}")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    c = common.coordinates(args, required=False)
    if c is None:
        raise common.AmlError("name the workspace: pass --subscription-id, --resource-group and --workspace-name "
                              f"(and --location to create it); {args.config} is written from them")
    if args.sdk == "v2":
        main_v2(args, c)
        return
    if args.dry_run:
        raise common.AmlError("--dry-run is for --sdk v2 (make workspace AML_SDK=v2 DRY_RUN=1)")
    core = v1.import_sdk()
    auth = v1.make_auth(args)
    if args.location:
        ws = core.Workspace.create(name=c["workspace_name"], auth=auth, subscription_id=c["subscription_id"],
                                   resource_group=c["resource_group"], location=args.location,
                                   create_resource_group=True, exist_ok=True, show_output=True)
    else:
        ws = core.Workspace.get(c["workspace_name"], auth=auth, subscription_id=c["subscription_id"],
                                resource_group=c["resource_group"], cloud=args.cloud)
    write_config(ws, Path(args.config))
    print(f"workspace {ws.name} ({ws.location}) in {ws.resource_group}; config written to {args.config}")


def write_config(ws, path: Path, subscription_id: str | None = None) -> None:
    """The config both SDKs read (v2's MLClient.from_config takes the same three keys). v1's workspace has its own
    writer, which the tutorial uses; a v2 workspace entity does not know its subscription, so it is passed."""
    if subscription_id is None and path.parent.name == ".azureml":
        ws.write_config(path=str(path.parent.parent), file_name=path.name)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"subscription_id": subscription_id or ws.subscription_id,
                                    "resource_group": ws.resource_group, "workspace_name": ws.name},
                                   indent=4) + "\n")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
