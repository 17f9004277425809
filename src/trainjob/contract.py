"""The container contract, written once: environment variables, paths, output files and exit codes.

The README's contract table mirrors this module; change both together.
"""

# --- Environment variables (a flag on the command line always wins) ---------------------------------------------
ENV_DATA_PATH = "DATA_PATH"  # e.g. DATA_PATH=/data: where the dataset is mounted
ENV_OUTPUT_DIR = "OUTPUT_DIR"  # e.g. OUTPUT_DIR=/outputs: where model.pt, summary.json, plots go
ENV_CACHE_DIR = "TRAINJOB_CACHE_DIR"  # e.g. /tmp/trainjob-cache: decoded image-folder cache ("off" disables it)
ENV_WEIGHTS_DIR = "TRAINJOB_WEIGHTS_DIR"  # e.g. /opt/trainjob/weights: pretrained backbone weights baked into the image
ENV_TIME_BUDGET = "TRAINJOB_TIME_BUDGET"  # e.g. 600: stands in for --time_budget (seconds a training run may take)
ENV_AZUREML_RUN_ID = "AZUREML_RUN_ID"  # set by Azure ML inside a run; outputs then go to ./outputs (uploaded)
ENV_MLFLOW_URI = "MLFLOW_TRACKING_URI"  # an MLflow server (or azureml://, set by Azure ML v2 jobs): metrics go there
ENV_MLFLOW_RUN_ID = "MLFLOW_RUN_ID"  # set by Azure ML v2 jobs: the job's own MLflow run, which metrics join
ENV_MLFLOW_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"  # the MLflow experiment of a new run (default trainjob)
ENV_SERVE_MAX_BYTES = "TRAINJOB_SERVE_MAX_BYTES"  # train serve: the largest request body (DEFAULT_SERVE_MAX_BYTES)
ENV_REVISION = "TRAINJOB_REVISION"  # the code's git commit, set in the image at build time (version.code_version)
ENV_SERVE_MODEL = "TRAINJOB_MODEL"  # set by train serve for its scoring script; on Azure, AZUREML_MODEL_DIR instead
# Set by Azure ML's online endpoint in the container it starts with no command: the entrypoint then starts the inference
# server (azmlinfsrv) on SERVER_PORT with AML_APP_ROOT/AZUREML_ENTRY_SCRIPT, or trainjob/score.py when unset.
ENV_AZUREML_MODEL_DIR = "AZUREML_MODEL_DIR"  # the registered model's mount; the scoring script takes its model.pt
ENV_AZUREML_ENTRY_SCRIPT = "AZUREML_ENTRY_SCRIPT"  # the deployment's scoring script, relative to AML_APP_ROOT
ENV_AML_APP_ROOT = "AML_APP_ROOT"  # the deployment's uploaded code folder (default /var/azureml-app)
# Read by the inference server itself; make deploy-aml sets them from its flags.
ENV_SERVER_WORKERS = "WORKER_COUNT"  # server worker processes, each with its own copy of the model (default 1)
ENV_SERVER_WORKER_TIMEOUT = "WORKER_TIMEOUT"  # seconds a worker may be silent (loading, scoring) before it is killed
ENV_SCORING_TIMEOUT_MS = "SCORING_TIMEOUT_MS"  # milliseconds one request may score before the server gives up
SERVER_PORT = 5001  # the inference server's port: train serve's default and the deployment's inference_config routes
# Set by torchrun and by Azure ML's PyTorch distribution. WORLD_SIZE > 1 switches on DistributedDataParallel; the
# others say which process this is.
ENV_RANK = "RANK"
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_LOCAL_RANK = "LOCAL_RANK"
ENV_LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
ENV_MASTER_ADDR = "MASTER_ADDR"  # rank 0's address and port, which the other ranks join (read by torch.distributed)
ENV_MASTER_PORT = "MASTER_PORT"
# Every command checks each of these once, as it starts: settings.VARIABLES says what a good value is.

# --- Defaults -------------------------------------------------------------------------------------------------------
AZUREML_OUTPUT_DIR = "./outputs"  # the folder Azure ML uploads from a run's working directory
DEFAULT_OUTPUT_DIR = AZUREML_OUTPUT_DIR  # the same outside Azure ML, so a command that works locally works there
DEFAULT_CACHE_DIR = "~/.cache/trainjob"  # decoded images and backbone features, unless TRAINJOB_CACHE_DIR says
# train serve reads a whole request body into memory: the limit keeps one client from exhausting a worker.
DEFAULT_SERVE_MAX_BYTES = 20_000_000

# --- Files written to the output folder -----------------------------------------------------------------------------
MODEL_FILE = "model.pt"  # weights, classes, config, normalisation; torch.load(..., weights_only=True)
MODEL_FIX = f"pass the {MODEL_FILE} from a training run's output folder"  # what a refused model file says
SUMMARY_FILE = "summary.json"  # test_accuracy (0-1), per_class_accuracy, timings, dataset, config
METRICS_FILE = "metrics.jsonl"  # one JSON object per line: loss every log interval, one line per epoch
CURVES_FILE = "training_curves.png"
CONFUSION_FILE = "confusion_matrix.png"
FAILURE_FILE = "failure.txt"  # one line: why the run stopped (user error, internal error, SIGTERM)
CHECKPOINT_DIR = "checkpoints"  # resumable state: newest and previous good checkpoint (--checkpoint_dir moves it)

# --- Exit codes -----------------------------------------------------------------------------------------------------
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in trainjob: traceback on stderr, please report it
EXIT_USER = 2  # something the user can fix: bad flag, missing/malformed data, unwritable output folder
EXIT_DIVERGED = 3  # the loss became NaN or infinite: lower the learning rate; the last good checkpoint is kept
EXIT_STALLED = 4  # no progress for --stall_timeout seconds (a hung mount, a stuck decoder): rerun to resume
EXIT_SIGINT = 130  # 128 + SIGINT: stopped by Ctrl-C after writing a checkpoint
EXIT_SIGTERM = 143  # 128 + SIGTERM: stopped (docker stop, preemption) after writing a checkpoint; rerun to resume
