"""The daemon's HTTP endpoints: /metrics, /healthz and /readyz (only when metrics_address is set).

The port may be reachable by anyone (0.0.0.0 in a pod), so the server is bounded: one thread
with a selector, at most `MAX_CONNECTIONS` open connections (a new one closes the oldest, so a
flood of idle connections can neither hold the daemon's descriptors nor keep a kubelet's probe
out), `REQUEST_TIMEOUT_S` for a whole exchange, `MAX_REQUEST_BYTES` of request, one request per
connection. Whatever arrives, it never holds more than MAX_CONNECTIONS + 4 descriptors, so it can
never make a pass fail with EMFILE. Bodies pass through the output boundary.

Apart from `reconciler.daemon.service` so that a daemon without them never imports it.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from reconciler.daemon.metrics import Metrics

__all__ = ["HealthServer"]

MAX_CONNECTIONS: Final = 16
REQUEST_TIMEOUT_S: Final = 5.0
MAX_REQUEST_BYTES: Final = 8192
_ACCEPT_PAUSE_S: Final = 0.5
"""How long accepting waits when the process is out of descriptors and none is ours to close."""
_OUT_OF_DESCRIPTORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_TEXT: Final = "text/plain; charset=utf-8"
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class _Connection:
    sock: socket.socket
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    reply: memoryview | None = None
    draining: bool = False
    """The reply is sent: what the client still sends is read and dropped until it hangs up (or
    the deadline), so that closing never resets a reply it has not read yet."""


class HealthServer:
    """/metrics, /healthz and /readyz on one bounded HTTP/1.1 server, in a daemon thread.

    The thread sleeps in its selector until a connection, a byte or a deadline is due (an idle
    daemon wakes for nothing); `close` wakes it through a socket pair of its own.
    """

    def __init__(
        self,
        address: str,
        metrics: Metrics,
        alive: Callable[[], bool],
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, int(port)))
            listener.listen(MAX_CONNECTIONS)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self._metrics = metrics
        self._alive = alive
        self._ready = ready
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        self._connections: OrderedDict[socket.socket, _Connection] = OrderedDict()
        self._selector = selectors.DefaultSelector()
        self._accepting_from: float | None = None
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for conn in list(self._connections.values()):
            conn.sock.close()
        self._connections.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    # -- the loop ----------------------------------------------------------------------------

    def _serve(self) -> None:
        selector = self._selector
        selector.register(self._wake_r, selectors.EVENT_READ)
        selector.register(self._listener, selectors.EVENT_READ)
        while not self._closing:
            for key, mask in selector.select(self._next_timeout()):
                if key.fileobj is self._wake_r:
                    return
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._step(key.data, mask)
            self._expire()

    def _next_timeout(self) -> float | None:
        due = [c.deadline for c in self._connections.values()]
        if self._accepting_from is not None:
            due.append(self._accepting_from)
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    return  # the peer gave up before we took it (ECONNABORTED): next one
                if self._connections:
                    self._drop(next(iter(self._connections.values())))
                    continue
                # Out of descriptors and none of them ours: stop accepting for a moment
                # rather than spin on a listener that stays readable.
                self._selector.unregister(self._listener)
                self._accepting_from = time.monotonic() + _ACCEPT_PAUSE_S
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                self._drop(next(iter(self._connections.values())))  # the oldest goes
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + REQUEST_TIMEOUT_S)
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _step(self, conn: _Connection, mask: int) -> None:
        try:
            if conn.reply is None and mask & selectors.EVENT_READ:
                chunk = conn.sock.recv(4096)
                if not chunk or conn.draining:
                    if not chunk:
                        self._drop(conn)
                    return
                conn.received += chunk
                self._read(conn)
            elif conn.reply is not None and mask & selectors.EVENT_WRITE:
                sent = conn.sock.send(conn.reply)
                conn.reply = conn.reply[sent:]
                if not conn.reply:
                    conn.reply, conn.draining, conn.received = None, True, bytearray()
                    conn.sock.shutdown(socket.SHUT_WR)
                    self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)

    def _read(self, conn: _Connection) -> None:
        head_end = conn.received.find(b"\r\n\r\n")
        if head_end < 0:
            head_end = conn.received.find(b"\n\n")
        if head_end < 0:
            if len(conn.received) > MAX_REQUEST_BYTES:
                self._respond(conn, 431, b"request too large\n", "GET")
            return
        line = bytes(conn.received.split(b"\n", 1)[0]).strip()
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._respond(conn, 400, b"bad request\n", "GET")
            return
        method = parts[0].decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            self._respond(conn, 405, b"only GET and HEAD\n", "GET")
            return
        path = parts[1].split(b"?", 1)[0]
        code, body, kind = self._answer(path)
        self._respond(conn, code, body, method, kind)

    def _answer(self, path: bytes) -> tuple[int, bytes, str]:
        if path == b"/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            return 200, self._metrics.render(), CONTENT_TYPE_LATEST
        if path == b"/healthz":
            ok = self._alive()
            return (200, b"ok\n", _TEXT) if ok else (503, b"the reconcile loop is stuck\n", _TEXT)
        if path == b"/readyz":
            from reconciler.support.redact import scrub_line

            # The reason may quote a rejected finding: a file name, a key pasted as a TOML key.
            ok, why = self._ready()
            return 200 if ok else 503, scrub_line(why).encode() + b"\n", _TEXT
        return 404, b"not found: try /metrics, /healthz or /readyz\n", _TEXT

    def _respond(
        self, conn: _Connection, code: int, body: bytes, method: str, kind: str = _TEXT
    ) -> None:
        reason = _REASONS.get(code, "Error")
        head = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        conn.reply = memoryview(head + (b"" if method == "HEAD" else body))
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._connections.values() if c.deadline <= now]:
            self._drop(conn)
        if self._accepting_from is not None and self._accepting_from <= now:
            self._accepting_from = None
            self._selector.register(self._listener, selectors.EVENT_READ)

    def _drop(self, conn: _Connection) -> None:
        if self._connections.pop(conn.sock, None) is not None:
            self._selector.unregister(conn.sock)
        conn.sock.close()
