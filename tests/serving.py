"""Start `train serve` (the real Azure ML inference server) on a free loopback port and talk to it over HTTP."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cli_runner import REPO, cli_env
from loopback import free_port


def request(url: str, data: bytes | None = None, content_type: str = "application/octet-stream",
            method: str | None = None, timeout: float = 60) -> tuple[int, dict | str]:
    """(status, parsed JSON body, or the text when it is not JSON)."""
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def raw_request(port: int, data: bytes, timeout: float = 30) -> tuple[int | None, bytes]:
    """Send bytes as they are on a new connection and read until the server closes it: (status or None, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        answer = bytearray()
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].split()
    return (int(status_line[1]) if len(status_line) > 1 else None), body


def post_bytes(body: bytes, content_type: str = "application/octet-stream", path: str = "/score") -> bytes:
    """A whole POST request, closing its connection after the answer."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Server:
    """`python -m trainjob serve MODEL --port P` in the background; stopped on exit. Its output goes to a file
    (self.log()), never to a pipe nobody reads, which would stop the server once the pipe is full."""

    def __init__(self, model, *flags: str, env: dict | None = None, command: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = (command or [sys.executable, "-m", "trainjob"]) + ["serve", str(model), "--port", str(self.port),
                                                                 *flags]
        fd, name = tempfile.mkstemp(prefix="train-serve-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env or cli_env(), stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"train serve exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if request(self.url + "/", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("train serve did not answer GET / in time")

    def __enter__(self) -> "Server":
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_path.unlink(missing_ok=True)
