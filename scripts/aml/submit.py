#!/usr/bin/env python3
"""Submit the tutorial's training run (06-run-pytorch-data.py) on cpu-cluster, with this project's image.

    make submit-aml                                   # the tutorial's run; prints the Studio URL
    make submit-aml AML_ARGS="--wait"                 # stream the log; exit 3 if the run fails
    make submit-aml AML_ARGS="--node-count 2"         # DistributedDataParallel over 2 nodes (Gloo)
    make submit-aml AML_ARGS="--mode download -- --epochs 1"   # trainer flags after --
    make submit-aml DRY_RUN=1                         # print the run configuration as JSON; contacts nothing
    make submit-aml AML_SDK=v2                        # the same run as an SDK v2 command job (azure-ai-ml)
    make submit-aml AML_SDK=v2 DRY_RUN=1              # write build/aml/job.yml (az ml job create --file); offline

The dataset at <default datastore>/datasets/cifar10 is passed as --data_path and mounted (or downloaded) in the
container; the run starts launcher/train.py, which calls the trainer installed in the image (the code `docker run`
runs), with the registered environment `trainjob` (make push-image). Results land in the run's ./outputs.
Exit codes: see common.py (3: the run ended Failed or Canceled).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import common
import v1
import v2

LAUNCHER_DIR = Path(__file__).resolve().parent / "launcher"
LAUNCHER = "train.py"


def build_parser():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sdk", default="v1", choices=["v1", "v2"],
                   help="v1: azureml-core, the tutorial's SDK; v2: azure-ai-ml, a command job with MLflow metrics "
                   "and checkpoints on the datastore that survive preemption")
    p.add_argument("--compute", default=common.COMPUTE_NAME, help="compute target (make compute)")
    p.add_argument("--experiment", default=common.EXPERIMENT, help="experiment name")
    p.add_argument("--environment", default=common.ENVIRONMENT, help="registered environment (make push-image)")
    p.add_argument("--environment-version", help="environment version (v1 default: the latest; v2 default: --tag, "
                   "the version `make push-image AML_SDK=v2` registers the image under)")
    p.add_argument("--datastore", help="datastore holding the data (default: the workspace's default)")
    p.add_argument("--data-path", default=common.DATASTORE_PATH, help="folder on the datastore (make upload-data)")
    p.add_argument("--data", metavar="azureml:NAME:VERSION",
                   help="v2: a registered data asset instead of --data-path: an MLTable, or a uri_file manifest "
                   "(Azure ML's image-classification JSON Lines, or a CSV)")
    p.add_argument("--data-type", choices=["mltable", "uri_file", "uri_folder"],
                   help="v2: the --data asset's type (default: the workspace says; a dry run assumes mltable)")
    p.add_argument("--image-datastore", help="v2: the datastore a manifest's azureml:// URLs point to, mounted "
                   "and passed as the trainer's --image_root (default: --datastore, else the workspace's default)")
    p.add_argument("--mode", default="mount", choices=["mount", "download"],
                   help="mount: read on demand (FUSE in the image); download: copy to the node's disk first")
    p.add_argument("--learning-rate", default="0.003", help="the trainer's --learning_rate (the tutorial's value)")
    p.add_argument("--momentum", default="0.92", help="the trainer's --momentum (the tutorial's value)")
    p.add_argument("--node-count", type=int, default=1, help="nodes; above 1, one process per node with DDP (Gloo)")
    p.add_argument("--wait", action="store_true", help="stream the run's log until it ends; exit 3 if it fails")
    p.add_argument("--run-key", help="names the checkpoint folder <datastore>/trainjob-checkpoints/<experiment>/"
                   "<run key>/ (default: a hash of the data path and trainer settings, so the same command "
                   "resumes)")
    p.add_argument("--image-uri", help="v2: run this image as an anonymous environment, not the registered one")
    p.add_argument("--inline-environment", action="store_true", help="v2: run --registry/--image:--tag as an "
                   "anonymous environment, not the registered azureml:--environment:VERSION")
    p.add_argument("--dry-run", action="store_true",
                   help="build every SDK object offline: v1 prints the run configuration as JSON, v2 writes "
                   "build/aml/job.yml")
    off = p.add_argument_group("--dry-run only: the environment as push-image registers it")
    off.add_argument("--image", default="trainjob", help="image name")
    off.add_argument("--tag", help="image tag (default: the git commit)")
    off.add_argument("--registry", default="offline-dry-run.azurecr.io",
                     help="registry login server (offline, the workspace's registry is not read)")
    p.add_argument("train_args", nargs="*", metavar="-- TRAINER_FLAG",
                   help="more flags for the trainer (`train --help`), after --")
    common.add_workspace_args(p)
    return p


def trainer_arguments(args, data, checkpoints):
    """The tutorial's arguments: --data_path <dataset> --learning_rate 0.003 --momentum 0.92, then --checkpoint_dir
    on the datastore and any extras."""
    return ["--data_path", data, "--learning_rate", args.learning_rate, "--momentum", args.momentum,
            "--checkpoint_dir", checkpoints, *args.train_args]


def checkpoint_output(args, datastore):
    """The run's checkpoint folder as a v1 output, mounted read-write at a fixed datastore path (common.py).

    A mount, not an upload at the end: each checkpoint reaches the datastore as it is written, so a preempted run
    restarted on a new node, or the same command submitted again, resumes from it."""
    from azureml.data import OutputFileDatasetConfig

    return OutputFileDatasetConfig(name=common.CHECKPOINT_OUTPUT,
                                   destination=(datastore, common.checkpoint_path(args))).as_mount()


def consumption(args, dataset):
    named = dataset.as_named_input(common.INPUT_NAME)
    return named.as_mount() if args.mode == "mount" else named.as_download()


def script_run_config(args, dataset, environment, checkpoints):
    """The ScriptRunConfig of the run: same object for a real submit and for --dry-run."""
    if args.node_count < 1:
        raise common.AmlError(f"--node-count must be at least 1, got {args.node_count}")
    from azureml.core import ScriptRunConfig
    from azureml.core.runconfig import DockerConfiguration, PyTorchConfiguration

    distributed = None  # one node: the trainer runs alone; above, Azure ML sets RANK/WORLD_SIZE/MASTER_* per node
    if args.node_count > 1:
        distributed = PyTorchConfiguration(communication_backend="Gloo", node_count=args.node_count)
    src = ScriptRunConfig(source_directory=str(LAUNCHER_DIR), script=LAUNCHER,
                          arguments=trainer_arguments(args, consumption(args, dataset), checkpoints),
                          compute_target=args.compute, environment=environment,
                          docker_runtime_config=DockerConfiguration(use_docker=True),
                          distributed_job_config=distributed)
    return src


def datastore_for(ws, args):
    from azureml.core import Datastore

    return Datastore.get(ws, args.datastore) if args.datastore else ws.get_default_datastore()


def dataset_for(args, datastore, *, validate=True):
    from azureml.core import Dataset
    from azureml.data.dataset_error_handling import DatasetValidationError

    try:
        return Dataset.File.from_files(path=(datastore, args.data_path), validate=validate)
    except DatasetValidationError:
        raise common.AmlError(f"no files at {datastore.name}/{args.data_path}: run `make upload-data` "
                              "(or pass --data-path)") from None


# --- dry run --------------------------------------------------------------------------------------------------------
def offline_objects(args):
    """Workspace, dataset, environment and checkpoint output objects made without contacting Azure."""
    v1.import_sdk()
    import push_image
    from azureml.data.azure_storage_datastore import AzureBlobDatastore

    ws, where = v1.offline_workspace(args)
    name = args.datastore or common.DEFAULT_DATASTORE
    # Container and account are labels: the run configuration and the dataset refer to the datastore by name only.
    datastore = AzureBlobDatastore(ws, name, container_name="offline-dry-run", account_name="offline-dry-run")
    dataset = dataset_for(args, datastore, validate=False)  # validate=True would read the files
    image = f"{args.registry}/{args.image}:{args.tag or common.git_sha() or 'dev'}"
    environment = push_image.make_environment(args.environment, image)
    return ws, where, dataset, environment, checkpoint_output(args, datastore)


def offline_run_configuration(src):
    """The RunConfiguration submit() would send, converted as the SDK's _update_args_and_io does, minus the service.

    The SDK first saves the dataset (a service call) and puts its saved id in data.input; offline that id is None.
    Outputs need no service call: their OutputData is the SDK's own _to_output_data().
    """
    from azureml.core.runconfig import Data, DataLocation
    from azureml.core.runconfig import Dataset as DatasetReference
    from azureml.core.script_run_config import get_run_config_from_script_run
    from azureml.data.constants import _DATASET_ARGUMENT_TEMPLATE, _DATASET_OUTPUT_ARGUMENT_TEMPLATE
    from azureml.data.dataset_consumption_config import DatasetConsumptionConfig
    from azureml.data.output_dataset_config import OutputDatasetConfig

    rc = get_run_config_from_script_run(src)
    consumed = {}
    for i, arg in enumerate(rc.arguments):
        if isinstance(arg, DatasetConsumptionConfig):
            rc.arguments[i] = _DATASET_ARGUMENT_TEMPLATE.format(arg.name)
            rc.data[arg.name] = Data(data_location=DataLocation(dataset=DatasetReference(dataset_id=None)),
                                     create_output_directories=False, mechanism=arg.mode,
                                     environment_variable_name=arg.name, path_on_compute=arg.path_on_compute,
                                     overwrite=False)
            consumed[arg.name] = arg
        elif isinstance(arg, OutputDatasetConfig):
            rc.arguments[i] = _DATASET_OUTPUT_ARGUMENT_TEMPLATE.format(arg.name)
            rc.output_data[arg.name] = arg._to_output_data()
    return rc, consumed


def dry_run(args) -> dict:
    from azureml.core._serialization_utils import _serialize_to_dict
    from azureml.data._dataset_rest_helper import _dataset_to_saved_dataset_dto

    ws, where, dataset, environment, checkpoints = offline_objects(args)
    src = script_run_config(args, dataset, environment, checkpoints)
    rc, consumed = offline_run_configuration(src)
    datasets = {}
    for name, c in consumed.items():
        dto = _dataset_to_saved_dataset_dto(c.dataset).serialize()  # what submit sends to save the dataset
        datasets[name] = {"mode": c.mode, "paths": [p["pattern"] for p in c.dataset._dataflow._to_yaml_dict()["paths"]],
                          "saved_dataset_request": dto}
    return {
        "dry_run": True,
        "note": "built offline with azureml-core; nothing was sent to Azure. data.*.dataLocation.dataset.id is "
                "assigned by the service when the run is submitted.",
        "workspace": where,
        "experiment": args.experiment,
        "source_directory": src.source_directory,
        "run_configuration": _serialize_to_dict(rc),  # the function submit uses for definition.json's Configuration
        "datasets": datasets,
    }


# --- submit ---------------------------------------------------------------------------------------------------------
def registered_environment(ws, args):
    from azureml.core import Environment

    try:
        return Environment.get(ws, args.environment, version=args.environment_version)
    except Exception as e:  # the SDK raises a bare Exception carrying the HTTP code
        if "404" in str(e):
            raise common.AmlError(f"environment {args.environment} is not registered in workspace {ws.name}: "
                                  "run `make push-image`") from None
        raise


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.sdk == "v2":
        submit_v2(args)
        return
    if args.data:
        raise common.AmlError("--data (a registered data asset) needs the SDK v2 command job: add AML_SDK=v2 "
                              "(--sdk v2), or upload a folder and pass --data-path")
    if args.dry_run:
        v1.import_sdk()
        print(json.dumps(dry_run(args), indent=2))
        return
    ws = v1.load_workspace(args)
    from azureml.core import Experiment

    environment = registered_environment(ws, args)
    datastore = datastore_for(ws, args)
    src = script_run_config(args, dataset_for(args, datastore), environment, checkpoint_output(args, datastore))
    run = Experiment(ws, args.experiment).submit(src)
    print(f"submitted run {run.id} (experiment {args.experiment}, environment {environment.name} "
          f"version {environment.version}, {environment.docker.base_image}); checkpoints: "
          f"{datastore.name}/{common.checkpoint_path(args)}")
    print(f"Studio: {run.get_portal_url()}", flush=True)
    if args.wait:
        wait(run)


def v2_image(args, client=None) -> str:
    """The v2 job's environment: azureml:NAME:VERSION as push-image registers it, or an image (push_image.py)."""
    import push_image

    return push_image.v2_environment(args, client)


def submit_v2(args) -> None:
    if args.dry_run:
        job = v2.command_job(args, v2_image(args))
        path = v2.write_yaml(job, "job.yml")
        data, images = job.inputs["data"], job.inputs.get("images")
        mapped = f", images {images.path} as --image_root" if images is not None else ""
        assumed = " (type assumed: pass --data-type if it is not)" if args.data and not args.data_type else ""
        import push_image

        print(f"wrote {path} (offline, nothing sent): command job on {args.compute}, "
              f"{push_image.describe(job.environment)}, data {data.path} ({data.type}, {data.mode}){assumed}{mapped}, "
              f"checkpoints {job.outputs['checkpoints'].path}; submit it with `az ml job create --file {path}`")
        return
    client = v2.ml_client(args)
    if args.data and not args.data_type:
        args.data_type = v2.asset_type(client, args.data)
    job = client.jobs.create_or_update(v2.command_job(args, v2_image(args, client)))
    print(f"submitted job {job.name} (experiment {args.experiment}); checkpoints: {job.outputs['checkpoints'].path}")
    print(f"Studio: {job.studio_url}", flush=True)
    if args.wait:
        v2.wait(client, job)


def wait(run) -> None:
    try:
        run.wait_for_completion(show_output=True, raise_on_error=False)
    except KeyboardInterrupt:
        print(f"\nstopped watching; run {run.id} goes on: {run.get_portal_url()}", file=sys.stderr)
        raise
    status = run.get_status()
    if status == "Completed":
        print(f"run {run.id} completed; outputs: {run.get_portal_url()} (Outputs + logs)")
        return
    logs = run.get_all_logs(destination=f"outputs/aml-logs/{run.id}")
    main_log = next((p for p in logs if p.endswith(("std_log.txt", "70_driver_log.txt"))), logs[0] if logs else None)
    error = (run.get_details().get("error") or {}).get("error", {}).get("message", "")
    reason = f": {error.splitlines()[0]}" if error else ""
    raise common.RunFailed(f"run {run.id} ended {status}{reason}; log: {main_log or run.get_portal_url()}")


if __name__ == "__main__":
    sys.exit(common.run_main(main))
