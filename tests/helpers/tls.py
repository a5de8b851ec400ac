"""Real TLS and SMTP servers on 127.0.0.1 for tests, and the fingerprint of the leaf one presents.

Each server is a context manager running an accept loop in a thread and one thread per
connection. Stopping wakes the accept loop through a socket pair (no polling), shuts every open
connection down and joins every thread, so no socket outlives the test (filterwarnings=error
turns a leaked socket's ResourceWarning into a failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import selectors
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "server_context",
    "LoopbackServer",
    "TlsServer",
    "SmtpServer",
    "SilentServer",
    "closed_port",
    "leaf_fingerprint",
    "pem_fingerprint",
]

# A connection the client abandons must not keep a handler thread (and the test) waiting.
_CONNECTION_TIMEOUT_S = 10.0


def server_context(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server-side context for the given leaf+chain and key (files only exist while loading)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="tls-server-") as directory:
        cert_file, key_file = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert_file.write_bytes(chain_pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class LoopbackServer:
    """Accepts connections on 127.0.0.1 and hands each to `handle` in its own thread."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port: int = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-server", daemon=True)
        self.handled = 0

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._wake_w.send(b"x")
        self._acceptor.join(timeout=30)
        with self._lock:
            for conn in self._connections:
                # OSError: already closed by its handler or by the peer.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=30)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                conn, _ = self._listener.accept()
                conn.settimeout(_CONNECTION_TIMEOUT_S)
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                with self._lock:
                    self._connections.add(conn)
                    self._threads.append(thread)
                thread.start()

    def track(self, old: socket.socket, new: socket.socket) -> None:
        """`new` replaces `old` (wrap_socket detaches the plain socket) for stop() to shut down."""
        with self._lock:
            self._connections.discard(old)
            self._connections.add(new)

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except (OSError, ssl.SSLError):
            pass  # clients abort handshakes on purpose (untrusted certificates)
        finally:
            with self._lock:
                # A wrapped socket left in the set is closed; stop() tolerates that.
                self._connections.discard(conn)
                self.handled += 1
            conn.close()


class TlsServer(LoopbackServer):
    """Implicit TLS (https, smtps): handshake at once, then wait for the client to leave."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self._context = context

    def handle(self, conn: socket.socket) -> None:
        with self._context.wrap_socket(conn, server_side=True) as tls:
            self.track(conn, tls)
            while tls.recv(4096):
                pass


class SilentServer(LoopbackServer):
    """Accepts and never says a word: a client must give up on its own timeout."""

    def handle(self, conn: socket.socket) -> None:
        while conn.recv(4096):
            pass


class SmtpServer(LoopbackServer):
    """A tiny ESMTP server: 220 banner (multi-line), EHLO, optional STARTTLS, QUIT."""

    def __init__(
        self,
        context: ssl.SSLContext | None,
        *,
        offer_starttls: bool = True,
        banner: tuple[str, ...] = ("220-mx.test ESMTP test server", "220 mx.test ready"),
    ) -> None:
        super().__init__()
        self._context = context
        self._offer_starttls = offer_starttls and context is not None
        self._banner = banner

    def handle(self, conn: socket.socket) -> None:
        def send(text: str) -> None:
            conn.sendall(text.encode() + b"\r\n")

        for line in self._banner:
            send(line)
        reader = conn.makefile("rb")
        try:
            for raw in reader:
                verb = raw.decode("ascii", "replace").strip().split(" ", 1)[0].upper()
                if verb in {"EHLO", "HELO"}:
                    extensions = ["mx.test greets you", "PIPELINING", "SIZE 10240000"]
                    if self._offer_starttls:
                        extensions.append("STARTTLS")
                    extensions.append("8BITMIME")
                    for line in extensions[:-1]:
                        send(f"250-{line}")
                    send(f"250 {extensions[-1]}")
                elif verb == "STARTTLS" and self._offer_starttls:
                    send("220 2.0.0 ready to start TLS")
                    assert self._context is not None
                    with self._context.wrap_socket(conn, server_side=True) as tls:
                        self.track(conn, tls)
                        self._after_tls(tls)
                    return
                elif verb == "QUIT":
                    send("221 2.0.0 bye")
                    return
                else:
                    send("502 5.5.2 command not recognised")
        finally:
            reader.close()

    @staticmethod
    def _after_tls(tls: ssl.SSLSocket) -> None:
        with tls.makefile("rb") as reader:
            for raw in reader:
                if raw.strip().upper() == b"QUIT":
                    tls.sendall(b"221 2.0.0 bye\r\n")
                    return
                tls.sendall(b"502 5.5.2 command not recognised\r\n")


def leaf_fingerprint(address: tuple[str, int]) -> str:
    """The test's own TLS handshake: SHA-256 of the leaf the console presents."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(address, timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    return hashlib.sha256(der).hexdigest()
