#!/usr/bin/env bash
# Build the image with BuildKit: scripts/docker/build.sh IMAGE TAG  -> IMAGE:TAG and IMAGE:latest.
# Build options come from the environment (all optional):
#   VARIANT              full (default): SDK v1 + v2 jobs, online and batch endpoints; v2: without the SDK v1 run-time
#                        (azureml-core, dataset mounts, FUSE); train: v2 training only, no serving packages either.
#                        Other variants are tagged IMAGE:TAG-VARIANT and IMAGE:latest-VARIANT (docs/image.md)
#   BASE_IMAGE           base image (default python:3.11-slim-bookworm; offline: localhost/python:3.11-slim-bookworm)
#   TORCH_INDEX_URL      torch wheels: unset = CPU-only index (default); empty = PyPI's CUDA build; or a cuXXX index
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST   a package mirror
#   PIP_NO_INDEX=1       install only from docker/wheelhouse/
#   BACKBONE_WEIGHTS     more pretrained backbones to bake in, e.g. "resnet50 convnext_tiny" (downloaded at build time)
#   CA_BUNDLE            CA bundle for pip behind a TLS-inspecting proxy, passed as a BuildKit secret
#                        (default: /etc/ssl/certs/ca-certificates.crt when it exists; CA_BUNDLE= to pass none)
#   DOCKER_BUILD_ARGS    extra arguments for `docker build`, e.g. --no-cache or --progress=plain
set -euo pipefail

image=${1:?usage: build.sh IMAGE TAG}
tag=${2:?usage: build.sh IMAGE TAG}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# Debian's docker CLI (20.10) has BuildKit built in; /usr/local/bin/docker (28.x) here has no buildx.
docker_cli=${DOCKER_CLI:-/usr/bin/docker}
[[ -x $docker_cli ]] || docker_cli=docker

variant=${VARIANT:-full}
case $variant in
    full) suffix= ;;
    v2 | train) suffix=-$variant ;;  # never over IMAGE:latest, which the other make targets run
    *) echo "build: VARIANT=$variant is not a variant: full (default), v2 or train (docs/image.md)" >&2; exit 2 ;;
esac
tag+=$suffix
args=(--network host -f docker/Dockerfile -t "$image:$tag" -t "$image:latest$suffix" --build-arg "VARIANT=$variant")
# Passed only when set in the environment; TORCH_INDEX_URL may be set to empty on purpose (PyPI's CUDA build).
for var in BACKBONE_WEIGHTS BASE_IMAGE PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_NO_INDEX PIP_TRUSTED_HOST TORCH_INDEX_URL; do
    if [[ -n ${!var+set} ]]; then
        args+=(--build-arg "$var=${!var}")
    fi
done

ca=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
if [[ -n $ca && -s $ca ]]; then
    args+=(--secret "id=ca,src=$ca")
fi

# The image's TRAINJOB_REVISION and revision label. "-dirty" as src/trainjob/version.py says it for a checkout:
# tracked files changed (untracked ones do not count, as in `git describe --dirty`).
revision=$(git rev-parse --verify HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    revision+="-dirty"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
source=$(git config --get remote.origin.url 2>/dev/null || echo unknown)
args+=(--build-arg "REVISION=$revision" --build-arg "VERSION=$version" --build-arg "SOURCE=$source")

# shellcheck disable=SC2206  # DOCKER_BUILD_ARGS is a list of words on purpose
extra=(${DOCKER_BUILD_ARGS:-})
torch_from="the PyTorch CPU index"
[[ -n ${TORCH_INDEX_URL+set} ]] && torch_from=${TORCH_INDEX_URL:-PyPI (CUDA build)}
echo "build: $image:$tag, variant $variant (base ${BASE_IMAGE:-python:3.11-slim-bookworm}; torch from $torch_from)"
start=$SECONDS
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
DOCKER_BUILDKIT=1 "$docker_cli" build "${args[@]}" "${extra[@]}" . 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
if ((status != 0)); then
    # BuildKit's own words for an unreachable registry end a long log; the fix is one line.
    if grep -qE "no such host|failed to resolve source metadata|failed to do request: Head|dial tcp.*(registry|docker\.io)" "$log"; then
        echo "build: cannot pull the base image ${BASE_IMAGE:-python:3.11-slim-bookworm}: no registry answers." \
             "Make a local one with \`make base-image-offline\`, then build with" \
             "BASE_IMAGE=localhost/python:3.11-slim-bookworm (or point BASE_IMAGE at a mirror)" >&2
    else
        echo "build: docker build failed (exit $status); its output is above" >&2
    fi
    exit "$status"
fi
size=$("$docker_cli" image inspect --format '{{.Size}}' "$image:$tag")
echo "build: $image:$tag done in $((SECONDS - start)) s, $(awk -v b="$size" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
