"""Start `train serve` (the real Azure ML inference server) on a free loopback port and talk to it over HTTP."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

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


class Server:
    """`python -m trainjob serve MODEL --port P` in the background; stopped on exit."""

    def __init__(self, model, *flags: str, env: dict | None = None, command: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = (command or [sys.executable, "-m", "trainjob"]) + ["serve", str(model), "--port", str(self.port),
                                                                 *flags]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env or cli_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 120) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"train serve exited {self.proc.returncode}: {self.proc.stdout.read()[-3000:]}")
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
