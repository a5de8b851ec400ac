"""One probe connection: TCP, STARTTLS for smtp, the TLS handshake, and the leaf presented."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from reconciler.core.desired import Server
from reconciler.errors import StateRejectedError
from reconciler.probe.starttls import Deadline, send_quit, starttls_dialog


@dataclass(frozen=True, slots=True)
class Leaf:
    """The certificate a server presented, as far as it could be read."""

    subject: str | None
    not_after: datetime | None


def connect(server: Server, context: ssl.SSLContext, deadline: Deadline, phase: list[str]) -> Leaf:
    """Handshake with `server` through `context`; `phase[0]` names the step in progress."""
    host = bare_host(server.host)
    phase[0] = "connect"
    with socket.create_connection((host, server.port), timeout=deadline.remaining()) as sock:
        smtp = server.scheme == "smtp"
        if smtp:
            starttls_dialog(sock, deadline, phase)
        phase[0] = "TLS handshake"
        sock.settimeout(deadline.remaining())
        with context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False) as tls:
            tls.do_handshake()
            der = tls.getpeercert(binary_form=True)
            if smtp:
                send_quit(tls)
    return _leaf(der)


def bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _leaf(der: bytes | None) -> Leaf:
    if not der:
        return Leaf(None, None)
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return Leaf("(unparsable certificate)", None)
    return Leaf(cert.subject.rfc4514_string(), cert.not_valid_after_utc)


def verifying_context(extra_trust_pem: bytes, *, system_store: bool) -> ssl.SSLContext:
    """Verifies chain and host name against the system store (optional) plus `extra_trust_pem`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host name checks
    if system_store:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    # A trust entry may be a server's own (non-CA) certificate: OpenSSL only accepts a chain
    # ending in it as trusted with partial-chain verification.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if extra_trust_pem.strip():
        try:
            context.load_verify_locations(cadata=extra_trust_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise StateRejectedError(
                [f"trust/: the desired trust entries cannot be loaded for the probe: {exc}"]
            ) from exc
    return context


def presenting_context() -> ssl.SSLContext:
    """Verifies nothing: only used after verification failed, to report the leaf presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
