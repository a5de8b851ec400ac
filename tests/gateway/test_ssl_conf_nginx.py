"""ssl.conf as rendered, read by the real nginx: accepted, served, reloaded.

Every policy with and without `ssl on;` passes `nginx -t`; the old policy really serves TLS 1.0
and the modern one refuses TLS 1.2; a reload serves the new leaf; a reload nginx refuses keeps the
old workers serving.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.core.desired import DesiredState, Identity, TlsPolicy
from reconciler.core.render import Layout, render
from tests.helpers.desired import desired_state, make_identity
from tests.helpers.nginx import NginxError, NginxServer

POLICY_NAMES: tuple[TlsPolicy, ...] = ("modern", "intermediate", "old")


@pytest.fixture(scope="module")
def identity() -> Identity:
    return make_identity()


def _materialise(tmp_path: Path, desired: DesiredState, *, ssl_on: bool) -> Path:
    """Write the rendered targets under tmp_path/root, as apply would; returns ROOT."""
    root = tmp_path / "root"
    layout = Layout(
        root=PurePosixPath(root), trust_dir=PurePosixPath(tmp_path / "trust"), ssl_on=ssl_on
    )
    for target in render(desired, layout):
        if target.content is None:
            continue
        path = Path(target.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(target.content)
        path.chmod(target.mode)
    return root


@pytest.mark.nginx
@pytest.mark.parametrize("ssl_on", [True, False], ids=["ssl-on", "no-ssl-on"])
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_nginx_accepts_ssl_conf(
    tmp_path: Path, identity: Identity, policy: TlsPolicy, ssl_on: bool
) -> None:
    root = _materialise(tmp_path, desired_state(identity, tls_policy=policy), ssl_on=ssl_on)
    # With `ssl on;` the gateway's server block listens without `ssl`, as its docs say.
    done = NginxServer(tmp_path, root, listen_ssl=not ssl_on).test()
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
    assert "[emerg]" not in done.stderr


def _peer_leaf(address: tuple[str, int]) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(address, timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _s_client(address: tuple[str, int], *flags: str) -> subprocess.CompletedProcess[str]:
    host, port = address
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", "localhost", *flags],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.nginx
def test_old_policy_really_serves_tls_1_0_and_modern_refuses_tls_1_2(tmp_path: Path) -> None:
    """The SECLEVEL=0 in the old cipher string is what makes TLSv1 work on OpenSSL 3."""
    identity = make_identity("rsa2048")
    root = _materialise(tmp_path, desired_state(identity, tls_policy="old"), ssl_on=False)
    with NginxServer(tmp_path, root).start() as server:
        old = _s_client(server.address, "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
        assert old.returncode == 0, old.stdout + old.stderr
        assert "Protocol  : TLSv1\n" in old.stdout
        # No ssl_dhparam is written, so the DHE ciphers in the list must not be negotiable.
        dhe = _s_client(server.address, "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256")
        assert dhe.returncode != 0

        _materialise(tmp_path, desired_state(identity, tls_policy="modern"), ssl_on=False)
        server.reload()
        refused = _s_client(server.address, "-tls1_2")
        assert refused.returncode != 0
        accepted = _s_client(server.address, "-tls1_3")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr


@pytest.mark.nginx
def test_a_reload_serves_the_newly_rendered_leaf(tmp_path: Path, identity: Identity) -> None:
    root = _materialise(tmp_path, desired_state(identity), ssl_on=False)
    with NginxServer(tmp_path, root).start() as server:
        first = x509.load_pem_x509_certificate(identity.cert_pem)
        assert _peer_leaf(server.address) == first.public_bytes(Encoding.DER)

        renewed = make_identity()
        _materialise(tmp_path, desired_state(renewed), ssl_on=False)
        server.reload()
        second = x509.load_pem_x509_certificate(renewed.cert_pem)
        assert _peer_leaf(server.address) == second.public_bytes(Encoding.DER)


@pytest.mark.nginx
def test_a_reload_nginx_refuses_is_reported_and_old_workers_keep_serving(
    tmp_path: Path, identity: Identity
) -> None:
    root = _materialise(tmp_path, desired_state(identity), ssl_on=False)
    with NginxServer(tmp_path, root).start() as server:
        (root / "nginx" / "ssl.conf").write_text("ssl_protocols TLSv9;\n")
        with pytest.raises(NginxError, match="refused the reload"):
            server.reload()
        first = x509.load_pem_x509_certificate(identity.cert_pem)
        assert _peer_leaf(server.address) == first.public_bytes(Encoding.DER)
