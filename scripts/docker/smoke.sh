#!/usr/bin/env bash
# Smoke-test the built image: scripts/docker/smoke.sh IMAGE
# One epoch on generated data, hardened as a cluster would run it: no network, read-only root filesystem, an arbitrary
# non-root user, no capabilities. Checks the exit code and the files a user looks at.
set -euo pipefail

image=${1:?usage: smoke.sh IMAGE}
out=$(mktemp -d /tmp/trainjob-smoke.XXXXXX)
trap 'rm -rf "$out"' EXIT
chmod 0777 "$out"

echo "smoke: $image --help"
docker run --rm --network none "$image" --help >/dev/null

echo "smoke: $image --demo --epochs 1 (read-only, --user 12345:12345, no network, no capabilities)"
start=$SECONDS
docker run --rm --network none --read-only --tmpfs /tmp --user 12345:12345 --cap-drop ALL \
    --security-opt no-new-privileges -v "$out:/outputs" "$image" --demo --epochs 1 --progress lines

for file in model.pt summary.json metrics.jsonl training_curves.png confusion_matrix.png; do
    [[ -s $out/$file ]] || { echo "smoke: FAILED: $file missing in the output folder" >&2; ls -la "$out" >&2; exit 1; }
done
echo "smoke: ok in $((SECONDS - start)) s: $(ls "$out" | tr '\n' ' ')"
