#!/bin/sh
# `docker run IMAGE --epochs 1` runs `train --epochs 1`; `docker run IMAGE predict ...` runs `train predict ...`
# (and `evaluate`, `weights`, `export`, `serve ...` likewise);
# anything else (`bash`, `python ...`, Azure ML's own command) runs as given.
# With no command at all it trains, except where Azure ML's online endpoint starts the image: the endpoint gives no
# command and sets AZUREML_MODEL_DIR (the registered model's mount) and, with a code configuration,
# AZUREML_ENTRY_SCRIPT (relative to AML_APP_ROOT, the uploaded code folder). Then it starts the Azure ML inference
# server on port 5001 (the deployment's inference_config routes) with that scoring script, or with the image's own
# (trainjob/score.py) when there is no code configuration. WORKER_COUNT, WORKER_TIMEOUT and SCORING_TIMEOUT_MS,
# the deployment's settings, are read by the server itself (SCORING_TIMEOUT_MS stops a request only in gunicorn's
# sync worker, not in the threaded one started here: docs/serving.md).
# exec: the command replaces this shell as PID 1, so `docker stop`'s SIGTERM reaches Python, whose handler writes a
# checkpoint and exits 143. (PID 1 gets no default signal actions; trainjob installs its own SIGTERM handler.)
set -e

serve_endpoint() {
    if ! command -v azmlinfsrv > /dev/null; then
        echo "docker-entrypoint: this image has no inference server (built with VARIANT=train): deploy the full or v2 image" >&2
        exit 2
    fi
    if [ -n "${AZUREML_ENTRY_SCRIPT:-}" ]; then
        case "$AZUREML_ENTRY_SCRIPT" in
            /*) script=$AZUREML_ENTRY_SCRIPT ;;
            *) script=${AML_APP_ROOT:-/var/azureml-app}/$AZUREML_ENTRY_SCRIPT ;;
        esac
        if [ ! -f "$script" ]; then
            # One line in the deployment log, rather than the server's traceback from every worker.
            echo "docker-entrypoint: AZUREML_ENTRY_SCRIPT=$AZUREML_ENTRY_SCRIPT: no file $script (AML_APP_ROOT=${AML_APP_ROOT:-unset})" >&2
            exit 2
        fi
    else
        script=$(python -c 'import importlib.util; print(importlib.util.find_spec("trainjob.score").origin)')
    fi
    # The threaded worker with header and body read timeouts that train serve runs (trainjob/serve_worker.py says
    # why); flags the deployment sets in GUNICORN_CMD_ARGS come after it, so they win.
    # gunicorn's control socket serves gunicornc, which nothing here runs; it would go under HOME (/tmp) and log an
    # error on a read-only root. Its workers' heartbeat files go to the temp folder; on a read-only root with no
    # tmpfs only /dev/shm is writable (train serve does the same).
    GUNICORN_CMD_ARGS="$(python -m trainjob.serve_worker) ${GUNICORN_CMD_ARGS:-} --no-control-socket"
    if [ ! -w "${TMPDIR:-/tmp}" ] && [ -w /dev/shm ]; then
        GUNICORN_CMD_ARGS="$GUNICORN_CMD_ARGS --worker-tmp-dir /dev/shm"
    fi
    export GUNICORN_CMD_ARGS
    echo "docker-entrypoint: Azure ML online endpoint: azmlinfsrv --entry_script $script --port 5001 (model: ${AZUREML_MODEL_DIR:-unset})"
    exec azmlinfsrv --entry_script "$script" --port 5001
}

if [ $# -eq 0 ]; then
    if [ -n "${AZUREML_ENTRY_SCRIPT:-}${AZUREML_MODEL_DIR:-}" ]; then
        serve_endpoint
    fi
    set -- train
fi

case "$1" in
    -* | predict | evaluate | weights | export | serve) set -- train "$@" ;;
esac

exec "$@"
