"""`train serve MODEL.pt`: score images over HTTP with the Azure ML inference server, as a managed online endpoint
does, with trainjob's scoring script (trainjob/score.py).

    train serve outputs/model.pt                         # http://127.0.0.1:5001
    curl --data-binary @cat.jpg http://127.0.0.1:5001/score
    docker run -p 5001:5001 -v ./outputs:/models:ro IMAGE train serve /models/model.pt --host 0.0.0.0

GET / answers for liveness; POST /score takes an image's bytes (see trainjob/score.py for the JSON form).
"""

import argparse
import errno
import os
import socket
import sys
from pathlib import Path

from trainjob import contract
from trainjob.errors import UserError, user_errors_exit
from trainjob.serve_limits import BODY_TIMEOUT_S, HEADER_TIMEOUT_S


def build_parser() -> argparse.ArgumentParser:
    limit = contract.DEFAULT_SERVE_MAX_BYTES
    p = argparse.ArgumentParser(prog="train serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"A request body over ${contract.ENV_SERVE_MAX_BYTES} bytes is refused with 413 "
                                       f"(default {limit}, {limit / 1e6:g} MB). A request's line and headers must "
                                       f"come within {HEADER_TIMEOUT_S} s, and its body must not pause over "
                                       f"{BODY_TIMEOUT_S} s: else 408 (docs/serving.md).")
    p.add_argument("model", help=f"a {contract.MODEL_FILE} written by `train`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; in a container, 0.0.0.0 to publish the port)")
    p.add_argument("--port", type=int, default=5001, help="port to listen on (default 5001, as on Azure ML)")
    p.add_argument("--workers", type=int, default=1,
                   help="server worker processes, each with its own copy of the model (default 1)")
    return p


def check_port_free(host: str, port: int) -> None:
    """Fail now with one line, rather than after the server's five retries with a traceback each."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port {port} is not a port: pass 1 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use: stop what holds it or pass --port") from None
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): pass another --host or --port") from None


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainjob.inference import load_model

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    served = snapshot(args.model)
    try:
        load_model(served)  # a wrong path is one line now, not a traceback from each server worker
    except UserError as e:
        raise UserError(str(e).replace(served, args.model)) from None  # the user's path, not the copy's
    check_port_free(args.host, args.port)
    try:
        import azureml_inference_server_http  # noqa: F401 - run_server's, checked before the model is loaded
    except ImportError:
        raise UserError("train serve needs the Azure ML inference server: pip install 'trainjob[serve]' "
                        "(the image has it)") from None
    # A fresh interpreter for the server: gunicorn forks its workers from it, and a process that has run torch (the
    # model check above) can deadlock its forked children in torch's thread pools.
    os.execv(sys.executable, [sys.executable, "-m", "trainjob.serve", served, args.host, str(args.port),
                              str(args.workers), str(Path(args.model).resolve())])


def snapshot(model: str) -> str:
    """The model file copied into memory (a memfd), as a path every server worker opens: the workers load the bytes
    checked here even after model.pt is replaced or cut short on disk, and a worker that gunicorn restarts (a crash,
    WORKER_TIMEOUT) loads the same model as the others rather than whatever the file holds by then. The descriptor
    lives through the exec and gunicorn's forks; it costs the file's size in memory, once for all workers. Where
    there is no memfd (not Linux), the file itself."""
    from trainjob import torchfile

    if not hasattr(os, "memfd_create"):
        return str(Path(model).resolve())
    fix = contract.MODEL_FIX
    fd = os.memfd_create("trainjob-model", 0)  # not close-on-exec: the server's interpreter inherits it
    with torchfile.open_checked(model, "model file", fix) as f, open(fd, "wb", closefd=False) as copy:
        for block in torchfile.read_blocks(f, model):
            copy.write(block)
    return f"/proc/self/fd/{fd}"


def run_server(model: str, host: str, port: str, workers: str, shown: str) -> None:
    """The Azure ML inference server with trainjob/score.py, as `azmlinfsrv --entry_script score.py` runs it."""
    from azureml_inference_server_http import amlserver

    from trainjob import score
    from trainjob.serve_worker import gunicorn_args
    from trainjob.text import say

    os.environ[contract.ENV_SERVE_MODEL] = model
    # The threaded worker with read timeouts (serve_worker's doc says why); flags already in GUNICORN_CMD_ARGS come
    # after, so they win.
    gunicorn_cmd = f"{gunicorn_args()} {os.environ.get('GUNICORN_CMD_ARGS', '')}"
    # gunicorn keeps its workers' heartbeat files in the temp folder; under `docker run --read-only` with no tmpfs
    # only /dev/shm is writable.
    if not os.access(os.environ.get("TMPDIR", "/tmp"), os.W_OK) and os.access("/dev/shm", os.W_OK):
        gunicorn_cmd += " --worker-tmp-dir /dev/shm"
    os.environ["GUNICORN_CMD_ARGS"] = gunicorn_cmd.strip()
    os.environ.setdefault("AML_APP_ROOT", str(Path(score.__file__).parent))
    # azmlinfsrv always listens on 0.0.0.0; --host is the one setting its command line lacks.
    amlserver.DEFAULT_HOST = host
    say(f"serving {shown} on http://{host}:{port} (POST an image to /score; Ctrl-C stops)", flush=True)
    sys.argv = ["azmlinfsrv", "--entry_script", score.__file__, "--port", port, "--worker_count", workers]
    amlserver.run()


if __name__ == "__main__":
    run_server(*sys.argv[1:])
