"""Clients that misbehave, for make bench-serve's hostile row: connections that send a request head one byte at a
time and never finish it, and connections that send nothing. Each is opened again when the server closes it, so
the count stays what was asked until stop(); one thread drives them all."""

import http.client
import selectors
import socket
import statistics
import threading
import time

SLOW_HEAD = b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # then one byte every byte_every seconds


class Hostile:
    """`slow` trickling and `idle` silent connections to 127.0.0.1:port, held open until stop()."""

    def __init__(self, port: int, slow: int, idle: int, byte_every: float = 1.0):
        self.port, self.byte_every = port, byte_every
        self.cut_off = 0  # 408s the slow clients got
        self.reopened = {"slow": 0, "idle": 0}
        self._selector = selectors.DefaultSelector()
        self._next_byte: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        for kind, count in (("slow", slow), ("idle", idle)):
            for _ in range(count):
                self._open(kind)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self, kind: str) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if kind == "slow":
            sock.sendall(SLOW_HEAD)
            self._next_byte[sock] = time.monotonic() + self.byte_every
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, kind)

    def _reopen(self, sock: socket.socket, kind: str) -> None:
        self._selector.unregister(sock)
        self._next_byte.pop(sock, None)
        sock.close()
        if not self._stop.is_set():
            self.reopened[kind] += 1
            self._open(kind)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 408 "):
                    self.cut_off += 1
                if not data or data.startswith(b"HTTP/"):  # closed, or answered and about to be
                    self._reopen(key.fileobj, key.data)
            now = time.monotonic()
            for sock, due in list(self._next_byte.items()):
                if due <= now:
                    try:
                        sock.send(b"a")
                        self._next_byte[sock] = now + self.byte_every
                    except OSError:
                        self._reopen(sock, "slow")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()


class Prober:
    """GET / on a new connection every `every` seconds, as a liveness probe does, until stop(); latencies in ms (a
    probe that fails or takes over `timeout` counts as `timeout`)."""

    def __init__(self, port: int, every: float = 0.05, timeout: float = 5.0):
        self.port, self.every, self.timeout = port, every, timeout
        self.latencies: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", "/")
                ok = conn.getresponse().status == 200
            except OSError:
                ok = False
            finally:
                conn.close()
            self.failed += not ok
            self.latencies.append((time.perf_counter() - started) * 1000 if ok else self.timeout * 1000)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        cuts = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else self.latencies * 99
        return {"probes": len(self.latencies), "failed": self.failed, "p50": statistics.median(self.latencies),
                "p99": cuts[98]}
