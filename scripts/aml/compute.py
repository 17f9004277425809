#!/usr/bin/env python3
"""Get or create the training cluster (tutorial part 1, 02-create-compute.py): cpu-cluster, STANDARD_D2_V2, 0-4 nodes.

    make compute                      # the tutorial's values
    make compute AML_ARGS="--max-nodes 2 --vm-size STANDARD_D4_V2"
    make compute AML_SDK=v2 [DRY_RUN=1]  # the same cluster through azure-ai-ml; DRY_RUN=1 writes build/aml/compute.yml

Idempotent: an existing cluster is reused as it is; where its settings differ from the flags, they are listed (change
them in Studio or delete the cluster). Exit codes: see common.py.
"""

from __future__ import annotations

import sys

import common
import v1
import v2


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    common.add_workspace_args(p)
    p.add_argument("--name", default=common.COMPUTE_NAME, help="compute cluster name")
    p.add_argument("--vm-size", default=common.VM_SIZE, help="VM size of each node")
    p.add_argument("--min-nodes", type=int, default=common.MIN_NODES, help="nodes kept running when idle")
    p.add_argument("--max-nodes", type=int, default=common.MAX_NODES, help="most nodes the cluster scales to")
    p.add_argument("--idle-seconds", type=int, default=common.IDLE_SECONDS,
                   help="seconds a node stays idle before the cluster scales down")
    p.add_argument("--low-priority", action="store_true", help="low-priority (preemptible) VMs: cheaper, can stop")
    p.add_argument("--sdk", default="v1", choices=["v1", "v2"], help="v1: azureml-core; v2: azure-ai-ml")
    p.add_argument("--dry-run", action="store_true", help="v2: write build/aml/compute.yml; contact nothing")
    return p


def check_sizes(args) -> None:
    if not 0 <= args.min_nodes <= args.max_nodes or args.max_nodes < 1:
        raise common.AmlError(f"need 0 <= --min-nodes <= --max-nodes and --max-nodes >= 1, "
                              f"got {args.min_nodes} and {args.max_nodes}")


def amlcompute_v2(args):
    """The cluster as an azure.ai.ml AmlCompute entity."""
    check_sizes(args)
    v2.import_sdk()
    from azure.ai.ml.entities import AmlCompute

    return AmlCompute(name=args.name, size=args.vm_size, min_instances=args.min_nodes, max_instances=args.max_nodes,
                      idle_time_before_scale_down=args.idle_seconds,
                      tier="low_priority" if args.low_priority else "dedicated")


def main_v2(args) -> None:
    cluster = amlcompute_v2(args)
    if args.dry_run:
        path = v2.write_yaml(cluster, "compute.yml")
        print(f"wrote {path} (offline, nothing sent): {cluster.name}, {cluster.size}, {cluster.min_instances}-"
              f"{cluster.max_instances} nodes, {cluster.tier}; create it with `az ml compute create --file {path}`")
        return
    client = v2.ml_client(args)
    from azure.core.exceptions import ResourceNotFoundError

    try:
        have = client.compute.get(args.name)
    except ResourceNotFoundError:
        have = None
    if have is not None:
        print(f"{args.name} exists ({have.type}, {getattr(have, 'size', '?')}); reusing it")
        return
    print(f"creating {args.name}: {args.vm_size}, {args.min_nodes}-{args.max_nodes} nodes, {cluster.tier}")
    client.compute.begin_create_or_update(cluster).result()
    print(f"{args.name} created")


def provisioning_config(args):
    """The SDK's AmlCompute provisioning configuration for the flags (built offline)."""
    check_sizes(args)
    v1.import_sdk()
    from azureml.core.compute import AmlCompute

    return AmlCompute.provisioning_configuration(
        vm_size=args.vm_size, min_nodes=args.min_nodes, max_nodes=args.max_nodes,
        idle_seconds_before_scaledown=args.idle_seconds,
        vm_priority="lowpriority" if args.low_priority else "dedicated")


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.sdk == "v2":
        main_v2(args)
        return
    if args.dry_run:
        raise common.AmlError("--dry-run is for --sdk v2 (make compute AML_SDK=v2 DRY_RUN=1)")
    config = provisioning_config(args)
    ws = v1.load_workspace(args)
    from azureml.core.compute import ComputeTarget
    from azureml.exceptions import ComputeTargetException

    try:
        target = ComputeTarget(workspace=ws, name=args.name)
    except ComputeTargetException:
        target = None
    if target is None:
        print(f"creating {args.name}: {args.vm_size}, {args.min_nodes}-{args.max_nodes} nodes, "
              f"{args.idle_seconds} s idle before scale-down")
        target = ComputeTarget.create(ws, args.name, config)
        target.wait_for_completion(show_output=True)
        print(f"{args.name} created")
        return
    print(f"{args.name} exists ({target.type}); reusing it")
    differences = describe_differences(target, args)
    for line in differences:
        print(f"  note: {line}")


def describe_differences(target, args) -> list[str]:
    scale = getattr(target, "scale_settings", None)
    have = {"vm size": (getattr(target, "vm_size", None) or "").upper(),
            "min nodes": getattr(scale, "minimum_node_count", None),
            "max nodes": getattr(scale, "maximum_node_count", None),
            "idle seconds": getattr(scale, "idle_seconds_before_scaledown", None)}
    want = {"vm size": args.vm_size.upper(), "min nodes": args.min_nodes, "max nodes": args.max_nodes,
            "idle seconds": args.idle_seconds}
    return [f"{k} is {have[k]}, the flags ask for {want[k]}" for k in want if have[k] not in (None, "", want[k])]

if __name__ == "__main__":
    sys.exit(common.run_main(main))
