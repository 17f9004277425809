#!/usr/bin/env python3
"""Create or get the Azure ML workspace and write .azureml/config.json (tutorial part 1, 01-create-workspace.py).

    make workspace AML_ARGS="--subscription-id ID --resource-group RG --workspace-name NAME --location westeurope"

Idempotent: an existing workspace is reused (never modified) and the config file rewritten. Without --location the
workspace must already exist. Exit codes: see common.py (0 done, 1 internal, 2 fix on your side).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import common


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    common.add_workspace_args(p)
    p.add_argument("--location", help="Azure region to create the workspace in (e.g. westeurope); "
                   "without it the workspace must exist")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    core = common.import_sdk()
    c = common.coordinates(args, required=False)
    if c is None:
        raise common.AmlError("name the workspace: pass --subscription-id, --resource-group and --workspace-name "
                              f"(and --location to create it); {args.config} is written from them")
    auth = common.make_auth(args)
    if args.location:
        ws = core.Workspace.create(name=c["workspace_name"], auth=auth, subscription_id=c["subscription_id"],
                                   resource_group=c["resource_group"], location=args.location,
                                   create_resource_group=True, exist_ok=True, show_output=True)
    else:
        ws = core.Workspace.get(c["workspace_name"], auth=auth, subscription_id=c["subscription_id"],
                                resource_group=c["resource_group"], cloud=args.cloud)
    write_config(ws, Path(args.config))
    print(f"workspace {ws.name} ({ws.location}) in {ws.resource_group}; config written to {args.config}")


def write_config(ws, path: Path) -> None:
    if path.parent.name == ".azureml":  # the SDK's own writer, as the tutorial does
        ws.write_config(path=str(path.parent.parent), file_name=path.name)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"subscription_id": ws.subscription_id, "resource_group": ws.resource_group,
                                    "workspace_name": ws.name}, indent=4) + "\n")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
