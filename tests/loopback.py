"""Servers the tests start on loopback (mlflow server, Azurite, train serve): a free port, and a start that waits
until the server listens, or fails with the end of its log."""

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_listening(cmd: list[str], port: int, log_path: Path, what: str, timeout: float = 120,
                    **popen) -> subprocess.Popen:
    """Popen(cmd) with its output in log_path; returns once 127.0.0.1:port accepts connections. The log file stays
    open in the child; an exit or the timeout first raises AssertionError with the log's end."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{what} did not listen on port {port} (exit {proc.poll()}): "
                                     f"{log_path.read_text()[-2000:]}") from None
            time.sleep(0.2)
