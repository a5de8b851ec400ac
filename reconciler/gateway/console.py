"""Post-hook verification (after hooks, before commit): the console shows what was just applied.

Two questions, both retried until `[verify] timeout_s` because the service is still restarting:

* HTTPS on (ROOT/nginx/ssl.conf present): a TLS handshake to the console must present the leaf
  just written to ROOT/data/cert.pem, compared by the SHA-256 fingerprint of its DER.
* HTTPS off (ssl.conf absent): the port must no longer speak TLS, and must still serve the
  console: a ClientHello gets no TLS answer *and* a plain `HEAD / HTTP/1.0` gets an `HTTP/`
  status line. A refused connection, a silent port or a reset is a failure: the console must be
  up, only without TLS. (A TLS alert in reply to our ClientHello counts as speaking TLS.)
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from dataclasses import dataclass

RETRY_DELAY_S = 0.2
ATTEMPT_TIMEOUT_S = 5.0
HTTP_PROBE = b"HEAD / HTTP/1.0\r\nHost: reconciler-verify\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Handshake:
    """What one TLS connection attempt found."""

    fingerprint: str | None
    """SHA-256 of the presented leaf (DER, lowercase hex), when a TLS handshake succeeded."""
    error: str | None
    speaks_tls: bool = False
    """The peer answered in TLS (a handshake, or a TLS alert), as opposed to not at all."""
    connected: bool = False


def handshake(host: str, port: int, timeout_s: float) -> Handshake:
    """One TLS handshake without verification: we compare the leaf ourselves."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        return Handshake(None, f"cannot connect: {exc.strerror or exc}")
    with raw:
        try:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLError as exc:
            # An alert is TLS spoken back (e.g. no shared cipher); anything else is not TLS.
            alert = "ALERT" in str(exc.reason or "").upper()
            return Handshake(None, f"no TLS handshake: {exc}", speaks_tls=alert, connected=True)
        except OSError as exc:
            return Handshake(None, f"no TLS handshake: {exc.strerror or exc}", connected=True)
    if der is None:
        return Handshake(None, "no certificate presented", speaks_tls=True, connected=True)
    return Handshake(fingerprint_of(der), None, speaks_tls=True, connected=True)


def http_status_line(host: str, port: int, timeout_s: float) -> str | None:
    """The status line a plain HTTP request gets, or None when the answer is not HTTP."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(HTTP_PROBE)
            answer = b""
            while b"\n" not in answer and len(answer) < 1024:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return None
    line = answer.split(b"\n", 1)[0].strip()
    return line.decode("ascii", "replace") if line.startswith(b"HTTP/") else None


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def fingerprint_of(der: bytes) -> str:
    """The fingerprint verification compares: SHA-256 of the certificate's DER, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def check_once(host: str, port: int, expected: str | None, timeout_s: float) -> str | None:
    """One attempt: None when the console shows what was applied, else why not."""
    result = handshake(host, port, timeout_s)
    if expected is not None:
        if result.fingerprint == expected:
            return None
        if result.fingerprint is not None:
            return (
                f"presents certificate sha256:{result.fingerprint[:16]}..., "
                f"not the new leaf sha256:{expected[:16]}..."
            )
        return result.error or "no answer"
    if result.speaks_tls:
        return "still speaks TLS, but HTTPS was turned off"
    if not result.connected:
        return f"{result.error}; the console must be up (serving plain HTTP)"
    status = http_status_line(host, port, timeout_s)
    if status is None:
        return "does not speak TLS, but does not answer plain HTTP either"
    return None


def verify_console(address: str, expected_fingerprint: str | None, timeout_s: float) -> str | None:
    """Retry until the console shows what was applied; None when it does, else why not.

    `expected_fingerprint` None means HTTPS was turned off: the port must answer plain HTTP and
    not TLS. The message of a failure names the address, the last reason and the time spent.
    """
    host, port = split_address(address)
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = max(0.1, deadline - time.monotonic())
        problem = check_once(host, port, expected_fingerprint, min(remaining, ATTEMPT_TIMEOUT_S))
        if problem is None:
            return None
        if time.monotonic() + RETRY_DELAY_S >= deadline:
            return f"console {address}: {problem} (still so after {timeout_s:g} s)"
        # The service is restarting and tells us nothing: nothing to wait on but time.
        time.sleep(RETRY_DELAY_S)
