#!/usr/bin/env bash
# Train in the image: scripts/docker/run.sh [--shell] IMAGE DATA OUT [train args...]   (make run, make shell)
# DATA is mounted read-only at /data, OUT at /outputs; the container runs as you, so OUT stays yours, with no network.
# DATA holding no dataset: trains on generated data (--demo) and says so loudly.
# No image yet: builds it first (make build). No Docker engine: runs the same job in the local .venv, and says so.
set -euo pipefail

shell=
if [[ ${1:-} == --shell ]]; then
    shell=1
    shift
fi
image=${1:?usage: run.sh [--shell] IMAGE DATA OUT [train args...]}
data=${2:?usage: run.sh [--shell] IMAGE DATA OUT [train args...]}
out=${3:?usage: run.sh [--shell] IMAGE DATA OUT [train args...]}
shift 3
root=$(cd "$(dirname "$0")/../.." && pwd)

mkdir -p "$data" "$out"  # made by you, not by the Docker daemon as root
data=$(cd "$data" && pwd)
out=$(cd "$out" && pwd)

# --demo unless the user chose the data or the mode (a flag, or `predict ...`).
demo=()
if [[ -z $shell && -z $(find "$data" -mindepth 1 -not -name '.*' -print -quit) ]]; then
    case " $* " in
        *" --demo "* | *" --data_path"* | *" --help "* | *" -h "* | " predict "*) ;;
        *)
            demo=(--demo)
            cat >&2 <<MSG
################################################################################################
##  NO DATASET IN $data
##  Training on GENERATED DEMO DATA (--demo): the model and accuracy mean nothing for real images.
##  Put cifar-10-batches-py/, cifar-10-python.tar.gz, train/<class>/ + test/<class>/ or <class>/
##  folders there (make data downloads CIFAR-10), then run this again.
################################################################################################
MSG
            ;;
    esac
fi

if ! docker info >/dev/null 2>&1; then
    if [[ -n $shell ]]; then
        echo "run.sh: no Docker engine answers; cannot open a shell in the image (scripts/docker/start_engine.sh" \
             "starts one)" >&2
        exit 1
    fi
    cat >&2 <<MSG
################################################################################################
##  NO DOCKER ENGINE ANSWERS: running the same job in $root/.venv, NOT in the image.
##  Start an engine (scripts/docker/start_engine.sh, or Docker Desktop) to train in the image.
################################################################################################
MSG
    exec "$root/.venv/bin/train" --data_path "$data" --output_dir "$out" "${demo[@]}" "$@"
fi
if ! docker image inspect "$image" >/dev/null 2>&1; then
    tag=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo dev)
    echo "run.sh: no image $image yet: building it first (make build; several minutes the first time)" >&2
    "$root/scripts/docker/build.sh" "${image%:*}" "$tag" >&2
fi

tty=()
[[ -t 0 && -t 1 ]] && tty=(-it)
# The hardening the tests run with: no network, read-only root, no capabilities, no privilege gain.
run=(docker run --rm "${tty[@]}" --network none --read-only --tmpfs /tmp --cap-drop ALL
     --security-opt no-new-privileges --user "$(id -u):$(id -g)" -v "$data:/data:ro" -v "$out:/outputs")
if [[ -n $shell ]]; then
    exec "${run[@]}" "$image" bash
fi
exec "${run[@]}" "$image" "${demo[@]}" "$@"
