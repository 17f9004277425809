#!/usr/bin/env bash
# Start a Docker engine where none answers (CI machines, dev boxes without a service manager). Idempotent.
# The engine gets no bridge network: build with --network host, run containers with --network none.
set -euo pipefail

log=${DOCKERD_LOG:-/tmp/dockerd.log}
timeout_s=${DOCKERD_TIMEOUT_S:-60}

if docker info >/dev/null 2>&1; then
    echo "docker engine: already running"
    exit 0
fi

"$(dirname "$0")/ensure_command.sh" dockerd docker.io

# No service manager here: run dockerd detached, logs to a file, so this script can return.
# --bridge=none/--iptables=false: no NAT setup needed (and none possible in many sandboxes).
echo "docker engine: starting dockerd (log: $log)"
setsid nohup dockerd --bridge=none --iptables=false --ip-forward=false >"$log" 2>&1 &

for _ in $(seq "$timeout_s"); do
    if docker info >/dev/null 2>&1; then
        echo "docker engine: ready ($(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 1
done
echo "docker engine: no answer after ${timeout_s}s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
