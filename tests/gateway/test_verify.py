"""Console verification against real servers on 127.0.0.1: the new leaf, or no TLS at all."""

from __future__ import annotations

import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.gateway.console import check_once, fingerprint_of, split_address, verify_console
from reconciler.support.devpki import Issued
from tests.helpers.state import Pki
from tests.helpers.tls import LoopbackServer, SilentServer, TlsServer, closed_port, server_context


def fingerprint(issued: Issued) -> str:
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    return fingerprint_of(cert.public_bytes(Encoding.DER))


class PlainHttpServer(LoopbackServer):
    """Answers whatever comes with an HTTP/1.1 200, the way nginx without `ssl` does."""

    def handle(self, conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")


class RestartingTlsServer(TlsServer):
    """Presents the old leaf for the first `old_for` connections, then the new one: a restart."""

    def __init__(self, old: ssl.SSLContext, new: ssl.SSLContext, old_for: int) -> None:
        super().__init__(old)
        self._new = new
        self._old_for = old_for
        self.accepted = 0

    def handle(self, conn: socket.socket) -> None:
        # Verification connects once per attempt, one after the other: no race on the count.
        self.accepted += 1
        if self.accepted > self._old_for:
            self._context = self._new
        super().handle(conn)


Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


@pytest.fixture(scope="module")
def contexts(pki: Pki) -> Contexts:
    """Server contexts for the old leaf and the new one."""
    return (
        server_context(pki.chain(pki.leaf), pki.leaf.key_pem),
        server_context(pki.chain(pki.leaf2), pki.leaf2.key_pem),
    )


def test_console_presenting_the_new_leaf_passes(pki: Pki, contexts: Contexts) -> None:
    with TlsServer(contexts[1]) as server:
        assert verify_console(server.address, fingerprint(pki.leaf2), timeout_s=5) is None


def test_console_still_presenting_the_old_leaf_fails_after_the_timeout(
    pki: Pki, contexts: Contexts
) -> None:
    with TlsServer(contexts[0]) as server:
        problem = verify_console(server.address, fingerprint(pki.leaf2), timeout_s=0.6)
    assert problem is not None
    assert problem.startswith(f"console {server.address}: presents certificate sha256:")
    assert f"not the new leaf sha256:{fingerprint(pki.leaf2)[:16]}" in problem
    assert "after 0.6 s" in problem


def test_verification_retries_while_the_service_restarts(pki: Pki, contexts: Contexts) -> None:
    with RestartingTlsServer(contexts[0], contexts[1], old_for=3) as server:
        assert verify_console(server.address, fingerprint(pki.leaf2), timeout_s=30) is None
        assert server.accepted == 4


def test_nothing_listening_fails_with_the_connect_error(pki: Pki) -> None:
    address = f"127.0.0.1:{closed_port()}"
    problem = verify_console(address, fingerprint(pki.leaf), timeout_s=0.3)
    assert problem is not None
    assert "cannot connect" in problem
    assert address in problem


def test_https_off_passes_when_the_port_serves_plain_http() -> None:
    with PlainHttpServer() as server:
        assert verify_console(server.address, None, timeout_s=5) is None


def test_https_off_fails_while_the_port_still_speaks_tls(contexts: Contexts) -> None:
    with TlsServer(contexts[0]) as server:
        problem = verify_console(server.address, None, timeout_s=0.5)
    assert problem is not None
    assert "still speaks TLS" in problem


def test_https_off_with_nothing_listening_is_a_failure_the_console_must_be_up() -> None:
    address = f"127.0.0.1:{closed_port()}"
    problem = check_once(*split_address(address), None, 1.0)
    assert problem is not None
    assert "cannot connect" in problem
    assert "the console must be up" in problem


def test_https_off_with_a_port_that_answers_nothing_fails() -> None:
    with SilentServer() as server:
        problem = check_once(*split_address(server.address), None, 0.3)
    assert problem == "does not speak TLS, but does not answer plain HTTP either"


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:8443", ("127.0.0.1", 8443)), ("[::1]:443", ("::1", 443))],
    ids=["ipv4", "ipv6"],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected
