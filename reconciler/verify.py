"""Post-hook verification: the console must present the leaf just applied (or no TLS at all)."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from dataclasses import dataclass

RETRY_DELAY_S = 0.2


@dataclass(frozen=True, slots=True)
class Handshake:
    """What one connection attempt found."""

    fingerprint: str | None
    """SHA-256 of the presented leaf (DER), when a TLS handshake succeeded."""
    error: str | None


def handshake(host: str, port: int, timeout_s: float) -> Handshake:
    """One TLS handshake without verification: we compare the leaf ourselves."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            try:
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    der = tls.getpeercert(binary_form=True)
            except (ssl.SSLError, OSError) as exc:
                return Handshake(None, f"no TLS handshake: {exc}")
    except OSError as exc:
        return Handshake(None, f"cannot connect: {exc.strerror or exc}")
    if der is None:
        return Handshake(None, "no certificate presented")
    return Handshake(hashlib.sha256(der).hexdigest(), None)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def verify_console(address: str, expected_fingerprint: str | None, timeout_s: float) -> str | None:
    """Retry until the console shows what was applied; None when it does, else why not.

    `expected_fingerprint` None means HTTPS was turned off: the port must answer, but not with TLS.
    """
    host, port = split_address(address)
    deadline = time.monotonic() + timeout_s
    last = "no attempt made"
    while True:
        remaining = max(0.1, deadline - time.monotonic())
        result = handshake(host, port, min(remaining, 5.0))
        if expected_fingerprint is None:
            if result.fingerprint is None and result.error and result.error.startswith("no TLS"):
                return None
            last = "still speaks TLS" if result.fingerprint else (result.error or last)
        elif result.fingerprint == expected_fingerprint:
            return None
        elif result.fingerprint is not None:
            last = f"presents certificate sha256:{result.fingerprint[:16]}..., not the new leaf"
        else:
            last = result.error or last
        if time.monotonic() + RETRY_DELAY_S >= deadline:
            return f"console {address}: {last} (after {timeout_s:g} s)"
        time.sleep(RETRY_DELAY_S)  # the service is restarting: nothing to wait on but time
