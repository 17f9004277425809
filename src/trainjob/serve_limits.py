"""What `train serve`'s worker (serve_worker) accepts from a client, and how long it waits for it: a request head
must be whole, small and printable ASCII, and a request body must keep coming.

The head's checks run in the worker's event loop before any thread sees the request; the body's pace is kept by
PacedSocket, the socket the request parser reads, in the thread that scores the request (score.py answers a
BodyTimeout with 408). A refusal is JSON {"message": reason}, as the inference server's own refusals are.
"""

import json
import re
import socket
import time
from http import HTTPStatus

HEADER_TIMEOUT_S = 10  # from a connection's start (or its last response) to the blank line ending the head
BODY_TIMEOUT_S = 10  # the longest pause in a request body, and the grace before MIN_BODY_RATE applies
MIN_BODY_RATE = 100_000  # bytes/s: a 20 MB body may take 210 s, a trickle of 1 byte every 9 s is cut off
MAX_HEAD_BYTES = 64 * 1024  # request line and headers; gunicorn's own limits (8 kB a line) apply after

# Anything but printable ASCII, tab and the CRLF line ends, or a CR or LF on its own.
_NOT_IN_A_HEAD = re.compile(rb"[^\t\x20-\x7e\r\n]|\r(?!\n)|(?<!\r)\n")


def head_complete(head: bytes | bytearray) -> bool:
    """Whether the worker has all it will read of a head: up to its blank line, or more than the limit."""
    return b"\r\n\r\n" in head or len(head) > MAX_HEAD_BYTES


def head_refusal(head: bytes) -> tuple[int, str] | None:
    """(status, reason) for a complete head the server must not parse, or None. A byte that is not printable ASCII
    is refused because the server's log lines print the request line and headers as they are: a terminal escape
    would reach whoever reads the log, and a non-UTF-8 query string fails azmlinfsrv's own log line with a 500."""
    end = head.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        return 431, f"request line and headers over {MAX_HEAD_BYTES} bytes"
    if head.startswith(b"\r\n"):
        return 400, "empty request line"
    if _NOT_IN_A_HEAD.search(head, 0, end):
        return 400, "a byte in the request line or headers that is not printable ASCII (percent-encode it)"
    return None


def refusal(status: int, reason: str) -> bytes:
    """A whole response that closes its connection."""
    body = json.dumps({"message": reason}).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class BodyTimeout(TimeoutError):
    """A request body stopped coming, or came slower than MIN_BODY_RATE."""


class PacedSocket:
    """A connection's socket as the request parser reads it: each read waits no longer than the body's pace allows.
    Writes and everything else go to the socket itself."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.start()

    def start(self) -> None:
        """A request's head has been read: its body starts now."""
        self._began = time.monotonic()
        self._received = 0

    def recv(self, size: int) -> bytes:
        allowed = self._began + BODY_TIMEOUT_S + self._received / MIN_BODY_RATE - time.monotonic()
        slow = f"request body slower than {MIN_BODY_RATE} bytes/s"
        if allowed <= 0:
            raise BodyTimeout(slow)
        wait = min(BODY_TIMEOUT_S, allowed)
        before = self._sock.gettimeout()  # gunicorn's own, while it drains a body nobody read
        self._sock.settimeout(wait if before is None else min(wait, before))
        try:
            data = self._sock.recv(size)
        except TimeoutError:
            # A wait of (nearly) the whole pause is a pause; a shorter one, the pace's deadline.
            raise BodyTimeout(f"no request body byte for {BODY_TIMEOUT_S} s" if wait > BODY_TIMEOUT_S - 1
                              else slow) from None
        finally:
            self._sock.settimeout(before)
        self._received += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self._sock, name)
