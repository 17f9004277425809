#!/bin/sh
# `docker run IMAGE --epochs 1` runs `train --epochs 1`; `docker run IMAGE predict ...` runs `train predict ...`
# (and `evaluate`, `weights`, `export`, `serve ...` likewise);
# anything else (`bash`, `python ...`, Azure ML's own command) runs as given.
# exec: the command replaces this shell as PID 1, so `docker stop`'s SIGTERM reaches Python, whose handler writes a
# checkpoint and exits 143. (PID 1 gets no default signal actions; trainjob installs its own SIGTERM handler.)
set -e

case "${1:-}" in
    -* | predict | evaluate | weights | export | serve) set -- train "$@" ;;
esac

exec "$@"
