"""The gunicorn worker that `train serve` and the image as an online endpoint run the inference server with:
gunicorn's threaded worker (gthread), kept from being held by slow, idle or stuck clients.

    python -m trainjob.serve_worker      # the GUNICORN_CMD_ARGS that select it (the image's entrypoint uses this)

azmlinfsrv's default, gunicorn's sync worker, serves one connection at a time and reads it with no timeout: one
client sending its headers slowly, or nothing, holds the whole server. gthread parks idle connections in its event
loop, but gunicorn 26 has no read timeout, and its thread reads a head from a blocking socket for as long as the
client takes. Here (docs/serving.md has the measurements and the alternatives):

- the event loop reads each request's head without blocking and gives a thread only a whole one (serve_limits:
  408 after HEADER_TIMEOUT_S, 431 over MAX_HEAD_BYTES, 400 for a byte that is not printable ASCII); the body must
  keep its pace (serve_limits.PacedSocket);
- `GET /` (liveness) has LIVENESS_THREADS of its own, so it answers while every scoring thread is busy;
- a connection is closed after its last response without the event loop waiting on it (gunicorn 26 waits up to
  2 s per connection there: ten clients keeping their end open stopped the server for 20 s);
- the heartbeat stops once requests have been waiting STUCK_AFTER_S with none finishing, so that gunicorn's
  --timeout (WORKER_TIMEOUT) restarts a worker stuck in its requests, as it restarts a stuck sync worker (with
  threads, the event loop would go on beating for ever).
"""

import errno
import selectors
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from gunicorn import http
from gunicorn.http.errors import InvalidHeader, UnsupportedTransferCoding
from gunicorn.workers.gthread import TConn, ThreadWorker

from trainjob.serve_limits import HEADER_TIMEOUT_S, PacedSocket, head_complete, head_refusal, refusal
from trainjob.text import printable

THREADS = 8  # per worker process: requests read and scored at once (score.py scores one at a time)
LIVENESS_THREADS = 2  # per worker process, for GET / alone
MAX_CONNECTIONS = 1000  # open connections per worker process, idle ones included (below the file limit)
KEEPALIVE_S = 5  # how long a connection may sit idle between requests
LINGER_S = 2  # after a connection's last response, how long what the client still sends is read before the close
STUCK_AFTER_S = 5  # requests waiting longer, none finishing: no heartbeat, and --timeout later a restart
LIVENESS = (b"GET / HTTP/", b"HEAD / HTTP/")


def gunicorn_args() -> str:
    """The gunicorn flags for this worker; azmlinfsrv passes its own (bind, workers, timeout, logs) on top."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else soft - 128  # the model, logs, pipes, listeners
    connections = max(THREADS + 16, min(MAX_CONNECTIONS, room))
    return (f"--worker-class trainjob.serve_worker.GuardedThreadWorker --threads {THREADS} "
            f"--worker-connections {connections} --keep-alive {KEEPALIVE_S}")


class GuardedConn(TConn):
    """gunicorn's connection, whose closing after the last response is left to the worker's event loop."""

    def __init__(self, worker: "GuardedThreadWorker", *args):
        super().__init__(*args)
        self.worker = worker
        self.head: bytearray | None = None  # what came of the request head the event loop is reading
        self.liveness = False  # its current request is GET /

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self)
        else:
            super().close()


class GuardedThreadWorker(ThreadWorker):
    """gthread that reads heads in its event loop, answers GET / from threads of its own, closes connections without
    waiting on them, and lets the arbiter restart it when a request is stuck (see the module's doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lingering: deque = deque()  # connections being drained before their close, oldest first
        self.in_flight: dict[object, float] = {}  # requests a thread is on (GET / aside): when each started
        self.last_done = time.monotonic()  # when one of them last finished
        self.liveness_pool: ThreadPoolExecutor | None = None

    def init_process(self) -> None:
        self.liveness_pool = ThreadPoolExecutor(max_workers=LIVENESS_THREADS)  # here: after the fork
        super().init_process()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.liveness_pool.shutdown(wait=False)  # as gthread leaves its own pool

    def notify(self) -> None:
        started = list(self.in_flight.values())  # one step under the GIL, while threads add and remove
        if not started or time.monotonic() - max(min(started), self.last_done) <= STUCK_AFTER_S:
            super().notify()

    def handle(self, conn):
        if conn.liveness:
            return super().handle(conn)
        token = object()
        self.in_flight[token] = time.monotonic()
        try:
            return super().handle(conn)
        finally:
            del self.in_flight[token]
            self.last_done = time.monotonic()

    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        self._await_head(GuardedConn(self, self.cfg, sock, client, listener.getsockname()))  # non-blocking

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection's next request begins: its head is read here too, not in a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn, conn.parser.unreader.take_buffered())

    def _await_head(self, conn, held: bytes = b"") -> None:
        conn.head = bytearray(held)
        conn.timeout = time.monotonic() + HEADER_TIMEOUT_S  # one timeout for all: pending_conns stays in order
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_head, conn))
        if head_complete(conn.head):
            self._head_done(conn)

    def _read_head(self, conn, sock) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._unwatch(conn)
            self._close(conn)
            return
        conn.head += data
        if head_complete(conn.head):
            self._head_done(conn)

    def _head_done(self, conn) -> None:
        self._unwatch(conn)
        head, conn.head = bytes(conn.head), None
        refused = head_refusal(head)
        if refused:
            self._refuse(conn, head, *refused)
            return
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, PacedSocket(conn.sock), conn.client)
        else:
            conn.parser.unreader.sock.start()
        conn.parser.unreader.unread(head)
        conn.data_ready = True  # handle() would otherwise wait for more bytes first
        conn.liveness = head.startswith(LIVENESS)
        done = (self.liveness_pool if conn.liveness else self.tpool).submit(self.handle, conn)
        done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def handle_error(self, req, client, addr, exc) -> None:
        # gunicorn answers a Transfer-Encoding it does not know with 501, as RFC 9112 suggests; the fault is the
        # client's, and a 5xx would count against the server wherever errors are watched.
        if isinstance(exc, UnsupportedTransferCoding):
            exc = InvalidHeader("TRANSFER-ENCODING", req=req)
        super().handle_error(req, client, addr, exc)

    def murder_pending(self) -> None:
        """Close connections whose head has not come in time: 408 where part of it came."""
        now = time.monotonic()
        # Shutting down (self.alive False), none of them will get a thread: close them now, not at their timeout.
        while self.pending_conns and (self.pending_conns[0].timeout <= now or not self.alive):
            conn = self.pending_conns[0]
            self._unwatch(conn)
            head, conn.head = bytes(conn.head), None
            if not head:
                self._close(conn)
            elif self.alive:
                self._refuse(conn, head, 408, f"request line and headers not received within {HEADER_TIMEOUT_S} s")
            else:
                self._refuse(conn, head, 503, "the server is stopping: send the request again")

    def _unwatch(self, conn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            self.pending_conns.remove(conn)
        except ValueError:
            pass

    def _refuse(self, conn, head: bytes, status: int, reason: str) -> None:
        """Answer from the event loop, which has written nothing on this connection yet, and close it."""
        client = f"{conn.client[0]}:{conn.client[1]}" if isinstance(conn.client, tuple) else conn.client
        request_line = head[:200].split(b"\r\n")[0].decode("ascii", "backslashreplace")
        self.log.info("refused %s from %s: %s (request line: %s)", status, printable(client), reason,
                      printable(request_line))
        try:
            conn.sock.send(refusal(status, reason))  # a few hundred bytes: the empty send buffer takes them at once
        except OSError:
            pass
        self.nr_conns -= 1
        self.linger(conn)

    def linger(self, conn) -> None:
        """Close a connection that is no longer counted in nr_conns (finish_request has taken it off): send the
        FIN now, read what the client still sends until it closes or LINGER_S pass, then close. Counted meanwhile."""
        self.nr_conns += 1
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.timeout = time.monotonic() + LINGER_S
        self.lingering.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))

    def _drain(self, conn, sock) -> None:
        try:
            if sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_linger(conn)

    def murder_keepalived(self) -> None:
        """gunicorn's, and the end of the lingering connections whose time is up (the loop calls this each turn)."""
        super().murder_keepalived()
        now = time.monotonic()
        while self.lingering and self.lingering[0].timeout <= now:
            self._end_linger(self.lingering[0])

    def _end_linger(self, conn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.lingering.remove(conn)
        self._close(conn)

    def _close(self, conn) -> None:
        self.nr_conns -= 1
        TConn.close(conn)


if __name__ == "__main__":
    print(gunicorn_args())
