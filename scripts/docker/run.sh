#!/usr/bin/env bash
# Train in the image: scripts/docker/run.sh [--shell] IMAGE DATA OUT [train args...]   (make run, make shell)
# DATA is mounted read-only at /data, OUT at /outputs; the container runs as you, so OUT stays yours, with no network.
# DATA holding no dataset: trains on generated data (--demo) and says so loudly.
# No Docker engine (or no image): runs the same job in the local .venv and says so in one line.
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

if ! docker info >/dev/null 2>&1 || ! docker image inspect "$image" >/dev/null 2>&1; then
    why="no Docker engine answers"
    docker info >/dev/null 2>&1 && why="no image $image (make build)"
    if [[ -n $shell ]]; then
        echo "run.sh: $why; cannot open a shell in the image" >&2
        exit 1
    fi
    echo "run.sh: $why: running the same job in $root/.venv instead (scripts/docker/start_engine.sh starts an engine)" >&2
    exec "$root/.venv/bin/train" --data_path "$data" --output_dir "$out" "${demo[@]}" "$@"
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
