"""The daemon's HTTP endpoints: /metrics, /healthz and /readyz (only when metrics_address is set).

Apart from `reconciler.daemon.service` so that a daemon without them never imports http.server
(and the email and socketserver modules behind it): a few megabytes of an idle daemon's memory.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.daemon.metrics import Metrics

__all__ = ["HealthServer"]


class HealthServer:
    """/metrics, /healthz and /readyz on one small threading HTTP server, in a daemon thread.

    The serving thread blocks in accept until a request comes (no poll interval: an idle daemon
    wakes for nothing); `close` wakes it with one connection of its own.
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
        server = _Server((host, int(port)), _Handler)
        server.metrics = metrics
        server.alive = alive
        server.ready = ready
        self._server = server
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        self._server.timeout = None
        while not self._closing:
            self._server.handle_request()

    def close(self) -> None:
        self._closing = True
        try:
            with socket.create_connection(self.address, timeout=1):
                pass
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics
    alive: Callable[[], bool]
    ready: Callable[[], tuple[bool, str]]

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            self._send(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok = self.server.alive()
            self._send(200 if ok else 503, b"ok\n" if ok else b"the reconcile loop is stuck\n")
        elif path == "/readyz":
            from reconciler.support.redact import scrub_line

            # The reason may quote a rejected finding: a file name, a key pasted as a TOML key.
            ok, why = self.server.ready()
            self._send(200 if ok else 503, scrub_line(why).encode() + b"\n")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(
        self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Scrapes every few seconds would drown the operational log; errors still reach it.
        return
