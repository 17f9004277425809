"""train serve against clients that misbehave, over real HTTP on loopback: connections held open idle or fed a byte
at a time, request heads the server must not parse, and random bodies (hypothesis) that must never be a 5xx."""

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from cli_runner import REPO, cli_env
from loopback import free_port
from serving import Server, post_bytes, raw_request, request

pytest.importorskip("azureml_inference_server_http")
from trainjob.serve_limits import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, MAX_HEAD_BYTES  # noqa: E402
from trainjob.serve_worker import STUCK_AFTER_S, THREADS, gunicorn_args  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

IDLE, SLOW = 40, 2 * THREADS  # more slow clients than threads: each would hold one if the head were read there
ESCAPE = "\x1b[2J"  # clears the screen of whoever reads the log


@pytest.fixture(scope="module")
def escaping_model(trained_models, tmp_path_factory):
    """The tutorial model with a class name that carries a terminal escape, as a class folder's name can."""
    saved = torch.load(trained_models["tutorial"], map_location="cpu", weights_only=True)
    saved["classes"] = [f"cat{ESCAPE}", *saved["classes"][1:]]
    path = tmp_path_factory.mktemp("escaping") / "model.pt"
    torch.save(saved, path)
    return path


@pytest.fixture(scope="module")
def server(escaping_model):
    with Server(escaping_model, env=cli_env(TRAINJOB_SERVE_MAX_BYTES="200000")) as s:
        yield s


@pytest.fixture(scope="module")
def image(trained_models) -> bytes:
    return next((trained_models["data"] / "test").rglob("*.png")).read_bytes()


def _read_until_closed(sock: socket.socket) -> bytes:
    answer = bytearray()
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return bytes(answer)


class Trickle:
    """Connections that each send `start`, then one more byte every half second."""

    def __init__(self, port: int, count: int, start: bytes = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "):
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.opened = time.monotonic()
        self.stop = threading.Event()
        for s in self.socks:
            s.sendall(start)
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        live = list(self.socks)
        while live and not self.stop.wait(0.5):
            for s in list(live):
                try:
                    s.send(b"a")
                except OSError:  # the server cut it off
                    live.remove(s)


@pytest.mark.slow
def test_idle_slow_and_stalled_clients_take_no_thread_and_are_cut_off_on_time(server, image):
    """With 40 idle connections and 16 clients sending their head a byte at a time (twice the worker's threads),
    GET / and POST /score answer at once; at the header timeout each slow client gets 408 and each idle one is
    closed; a body that stops coming, or comes a byte at a time, is 408 after the body timeout; the server goes on
    serving."""
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(IDLE)]
    slow = Trickle(server.port, SLOW)
    trickled_body = Trickle(server.port, 1, post_bytes(image, "image/png")[:-len(image)])
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(post_bytes(image, "image/png")[:-len(image) + 10])  # the head and 10 bytes of the body
    stalled_at = time.monotonic()
    try:
        for _ in range(5):
            started = time.monotonic()
            assert request(server.url + "/", timeout=5)[0] == 200
            assert time.monotonic() - started < 2
        assert request(server.url + "/score", image, "image/png", timeout=10)[0] == 200

        for s in slow.socks:
            s.settimeout(HEADER_TIMEOUT_S + 10)
            answer = _read_until_closed(s)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"not received within" in answer
        cut_after = time.monotonic() - slow.opened
        assert HEADER_TIMEOUT_S <= cut_after <= HEADER_TIMEOUT_S + 4, cut_after
        for s in idle:
            s.settimeout(5)
            assert _read_until_closed(s) == b""  # closed, without an answer to a request never sent

        stalled.settimeout(BODY_TIMEOUT_S + 10)
        answer = _read_until_closed(stalled)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"no request body byte for" in answer
        assert BODY_TIMEOUT_S <= time.monotonic() - stalled_at <= BODY_TIMEOUT_S + 4
        [trickling] = trickled_body.socks
        trickling.settimeout(10)
        answer = _read_until_closed(trickling)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"slower than" in answer, answer[:300]
    finally:
        for trickle in (slow, trickled_body):
            trickle.stop.set()
        for s in [*idle, *slow.socks, *trickled_body.socks, stalled]:
            s.close()
    assert request(server.url + "/", timeout=5)[0] == 200
    assert request(server.url + "/score", image, "image/png", timeout=10)[0] == 200


def test_clients_that_keep_their_end_open_after_the_last_response_do_not_stop_the_server(server):
    """gunicorn 26 drains a connection before closing it in its event loop, up to 2 s each: ten such clients made
    GET / wait 20 s."""
    holders = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            holders.append(s)
        for s in holders:
            assert _read_until_closed(s).startswith(b"HTTP/1.1 200 "), "the server closes its end after answering"
        started = time.monotonic()
        assert request(server.url + "/", timeout=10)[0] == 200
        assert time.monotonic() - started < 1
    finally:
        for s in holders:
            s.close()


@pytest.mark.parametrize("head, status", [
    (f"GET /score?top={ESCAPE} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
    (b"GET /score?top=\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # was a 500 from the server's own log line
    (b"GET / HTTP/1.1\r\nUser-Agent: caf\xc3\xa9\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n", 431),
    (b"\r\n\r\n", 400),
])
def test_a_head_with_bytes_the_log_would_print_raw_is_refused(server, head, status):
    got, body = raw_request(server.port, head)
    assert got == status, body
    assert "message" in json.loads(body)
    assert request(server.url + "/")[0] == 200


def test_strings_from_the_model_and_the_request_are_exact_in_json_and_escaped_in_the_log(server, image):
    status, body = request(server.url + "/score")
    assert status == 200 and body["classes"][0] == f"cat{ESCAPE}"
    status, body = request(server.url + "/score?top=3", image, "image/png")
    assert status == 200 and f"cat{ESCAPE}" in [t["class"] for t in body["top"]]
    raw_request(server.port, f"GET /score?top={ESCAPE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, body = request(server.url + "/score?top=%1b%5b2J", image, "image/png")  # the escape, percent-encoded
    assert status == 400 and "top='\\x1b[2J' is not a whole number" in body["error"], body
    log = server.log()
    assert "cat\\x1b[2J" in log and "top=\\x1b[2J" in log, log[-3000:]
    assert "\x1b" not in log


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bodies(image: bytes):
    """(body, content type): raw bytes, any JSON value, and the request's own shape with wrong parts."""
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                               lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=4),
                               max_leaves=20)
    entries = st.one_of(st.just(_base64(image)), st.binary(max_size=200).map(_base64), st.text(max_size=40),
                        json_values)
    requests = st.fixed_dictionaries({}, optional={"images": st.one_of(st.lists(entries, max_size=70), json_values),
                                                   "top": st.one_of(st.integers(-5, 2000), json_values)})
    nested = st.tuples(st.integers(1, 50_000), st.sampled_from(["[", '{"a":', '{"images":'])).map(
        lambda n_open: (n_open[1] * n_open[0]).encode())
    as_json = st.one_of(requests.map(lambda r: json.dumps(r).encode()), json_values.map(
        lambda v: json.dumps(v).encode()), nested, st.binary(max_size=300))
    return st.one_of(
        st.tuples(as_json, st.sampled_from(["application/json", "application/json; charset=utf-8"])),
        st.tuples(st.one_of(st.binary(max_size=300), st.just(image[:len(image) // 2]), st.just(image)),
                  st.sampled_from(["image/png", "application/octet-stream", "text/plain"])))


def test_random_bodies_are_answered_2xx_or_4xx_with_a_reason_and_the_server_goes_on(server, image):
    seen = {}

    @hypothesis.settings(derandomize=True, max_examples=400, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(_bodies(image))
    def post(body_and_type):
        body, content_type = body_and_type
        status, answer = raw_request(server.port, post_bytes(body, content_type))
        seen[status] = seen.get(status, 0) + 1
        assert status is not None and status < 500, (status, answer[:300], body[:200])
        if status != 200:
            assert json.loads(answer)["error"], answer

    post()
    assert seen.get(200) and seen.get(400), seen  # both kinds of body were drawn
    assert request(server.url + "/")[0] == 200
    assert request(server.url + "/score", image, "image/png")[0] == 200


@pytest.mark.parametrize("body, reason", [
    (b'{"images": ["%s"], "top": 1e400}', "\"top\" is a number, not a whole number"),
    (b'{"images": ["%s"], "top": true}', "\"top\" is true or false"),
    (b'{"images": ["%s"], "top": "3"}', "\"top\" is a string"),
    (b'{"images": [%s]}', "images[0] is a number, not a base64 string"),
    (b'{"images": ["%s"], "extra": [[[[[[[[[[1]]]]]]]]]]}', "nested deeper than 8"),
    ('{"images": ["%s"]}'.encode("utf-16"), "not UTF-8"),
])
def test_the_wrong_types_and_encodings_are_400(server, image, body, reason):
    if b"%s" in body:
        body = body.replace(b"%s", b"1" if b"[%s]" in body else _base64(image).encode())
    status, answer = request(server.url + "/score", body, "application/json")
    assert status == 400 and reason in answer["error"], answer


def test_a_body_cut_short_badly_chunked_or_in_an_unknown_coding_is_400(server, image):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(post_bytes(image, "image/png")[:-10])
        s.shutdown(socket.SHUT_WR)  # the client has sent all it will
        answer = _read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"cut short" in answer, answer[:300]
    chunked = (b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"zz\r\nabc\r\n0\r\n\r\n")
    status, body = raw_request(server.port, chunked)
    assert status == 400 and b"malformed" in body, body
    unknown = b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: rot13\r\n\r\nabc"
    assert raw_request(server.port, unknown)[0] == 400  # gunicorn's own answer is 501
    assert request(server.url + "/")[0] == 200


def test_the_image_started_as_an_endpoint_runs_the_server_with_the_same_worker(tmp_path):
    """The entrypoint (where Azure ML starts the image with no command) hands azmlinfsrv the worker and the settings
    train serve uses; a deployment's own GUNICORN_CMD_ARGS come after, so they win."""
    (tmp_path / "azmlinfsrv").write_text('#!/bin/sh\necho "GUNICORN_CMD_ARGS=$GUNICORN_CMD_ARGS"\n')
    (tmp_path / "azmlinfsrv").chmod(0o755)
    env = {k: v for k, v in cli_env().items() if not k.startswith(("AZUREML_", "AML_", "GUNICORN"))}
    env.update(PATH=f"{tmp_path}:{Path(sys.executable).parent}:/usr/bin:/bin", AZUREML_MODEL_DIR=str(tmp_path),
               GUNICORN_CMD_ARGS="--threads 4")
    result = subprocess.run(["sh", REPO / "entrypoint" / "docker-entrypoint.sh"], env=env, capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    args = result.stdout.strip().splitlines()[-1]
    assert args.startswith(f"GUNICORN_CMD_ARGS={gunicorn_args()} --threads 4"), args
    assert "--worker-class trainjob.serve_worker.GuardedThreadWorker" in args


def test_a_cors_preflight_is_200_and_another_method_405(server):
    assert request(server.url + "/score", method="OPTIONS")[0] == 200
    assert request(server.url + "/score", b"x", method="PUT")[0] == 405


SLEEPY_SCRIPT = '''
import time
from azureml_inference_server_http.api.aml_request import rawhttp

def init():
    pass

@rawhttp
def run(request):
    time.sleep(float(request.args.get("sleep", 0)))
    return "scored"
'''


@pytest.mark.slow
def test_a_worker_stuck_in_a_request_answers_liveness_and_is_restarted_after_the_worker_timeout(tmp_path):
    """A scoring script that never returns: GET / still answers (its own threads), and the worker, whose event loop
    would go on beating, withholds its heartbeat, so gunicorn's --timeout (WORKER_TIMEOUT) restarts it."""
    (tmp_path / "sleepy.py").write_text(SLEEPY_SCRIPT)
    port, log = free_port(), tmp_path / "server.log"
    start = ("import sys; from azureml_inference_server_http import amlserver; amlserver.DEFAULT_HOST = '127.0.0.1'; "
             f"sys.argv = ['azmlinfsrv', '--entry_script', {str(tmp_path / 'sleepy.py')!r}, '--port', '{port}']; "
             "amlserver.run()")
    env = cli_env(GUNICORN_CMD_ARGS=f"{gunicorn_args()} --no-control-socket", WORKER_TIMEOUT="3",
                  AZUREML_MODEL_DIR=str(tmp_path))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", start], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if request(url + "/", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        stuck = socket.create_connection(("127.0.0.1", port), timeout=60)
        stuck.sendall(b"POST /score?sleep=600 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
        time.sleep(STUCK_AFTER_S + 1)
        started = time.monotonic()
        assert request(url + "/", timeout=5)[0] == 200 and time.monotonic() - started < 1
        assert _read_until_closed(stuck) == b"", "the stuck request's worker was killed: no answer, closed"
        assert "WORKER TIMEOUT" in log.read_text(), log.read_text()[-2000:]
        assert request(url + "/score", b"x", timeout=30)[0] == 200  # a new worker serves
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
