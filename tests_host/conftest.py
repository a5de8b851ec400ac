"""The host tier's machine: a booted Debian set up as a mail gateway host, and its clients.

The machine has a network of its own (only loopback), where Debian's nginx package serves its
default site on port 80 and the gateway's console on 443 (including ROOT/nginx/*.conf), and
Postfix listens on 25 with `smtpd_tls_chain_files` naming ROOT/data/tls.pem: the ports a real
gateway uses, so the shipped unit and example settings are tested as they are. The clients
(`openssl s_client`, Python) run inside it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.workspace import gateway_toml
from reconciler.support import devpki
from tests.helpers.gitops import InPlaceCheckout
from tests_host.machine import Machine, booted

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / "dist" / "wheelhouse"
CONSOLE_PORT = 443
SMTP_PORT = 25
METRICS_PORT = 9465
SETTINGS = "/etc/reconciler/reconciler.toml"
CHECKOUT = "/srv/gitops/gateway"


@dataclass(frozen=True)
class Pki:
    """Generated at run time: a root, an intermediate, three gateway leaves, a partner CA."""

    root: devpki.Issued
    intermediate: devpki.Issued
    leaves: tuple[devpki.Issued, ...]
    partner_ca: devpki.Issued

    def chain(self, leaf: devpki.Issued) -> bytes:
        return leaf.cert_pem + self.intermediate.cert_pem

    def leaf(self, common_name: str) -> devpki.Issued:
        return devpki.issue(self.intermediate, common_name, sans=(common_name,))

    def weak_chain(self, common_name: str) -> tuple[devpki.Issued, bytes]:
        """A leaf and its chain that the reconciler accepts but OpenSSL at Debian's default
        security level (2) refuses to serve: issued by an intermediate CA with a 1024-bit RSA
        key ("ca key too small"), as an old in-house CA might have."""
        weak = devpki.make_ca("Host Tier Old Intermediate CA", key_type="rsa1024", issuer=self.root)
        leaf = devpki.issue(weak, common_name, sans=(common_name,))
        return leaf, leaf.cert_pem + weak.cert_pem


@dataclass
class Host:
    """The machine and what the tier set up on it."""

    machine: Machine
    pki: Pki
    checkout: InPlaceCheckout
    console_port: int = CONSOLE_PORT
    metrics_port: int = METRICS_PORT
    smtp_port: int = SMTP_PORT

    def desired(self, leaf: devpki.Issued, chain: bytes | None = None) -> dict[str, bytes]:
        """The whole desired state with `leaf` (and `chain`, by default the leaf and the tier's
        intermediate) as the gateway's identity."""
        return {
            "gateway.toml": gateway_toml(),
            "tls/cert.pem": chain or self.pki.chain(leaf),
            "tls/key.pem": leaf.key_pem,
            "trust/partner-ca.pem": self.pki.partner_ca.cert_pem,
        }

    def push(self, leaf: devpki.Issued, chain: bytes | None = None) -> str:
        """A `git pull` of a new desired state in the machine's checkout; returns its commit."""
        return self.push_files(self.desired(leaf, chain))

    def push_files(self, files: dict[str, bytes]) -> str:
        commit = self.checkout.push(files)
        assert commit is not None
        return commit

    def served(self, port: int, *, starttls: bool = False) -> str | None:
        """SHA-256 of the leaf `openssl s_client` sees on 127.0.0.1:PORT inside the machine
        (with `-starttls smtp`), lower-case hex; None without TLS there."""
        return served_fingerprint(self.machine, port, starttls=starttls)

    def serving(self, leaf: devpki.Issued) -> bool:
        """Both real clients see `leaf`: HTTPS on the console, STARTTLS on SMTP."""
        return self.served(self.console_port) == leaf.fingerprint and (
            self.served(self.smtp_port, starttls=True) == leaf.fingerprint
        )

    def settings(self) -> Path:
        return self.machine.path(SETTINGS)

    def edit_settings(self, edits: dict[str, str]) -> None:
        """Replace each text of the settings file (which must hold it once) with its value."""
        path = self.settings()
        text = path.read_text()
        for old, new in edits.items():
            assert text.count(old) == 1, f"the settings no longer hold {old!r}"
            text = text.replace(old, new)
        path.write_text(text)


_FINGERPRINT = re.compile(r"Fingerprint=([0-9A-F:]+)")


def served_fingerprint(machine: Machine, port: int, *, starttls: bool = False) -> str | None:
    starttls_args = "-starttls smtp " if starttls else ""
    script = (
        f"timeout 10 openssl s_client -connect 127.0.0.1:{port} {starttls_args}"
        "-servername gateway.test </dev/null 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256"
    )
    result = machine.run("/bin/sh", "-c", script, check=False, timeout=30)
    match = _FINGERPRINT.search(result.stdout)
    return match.group(1).replace(":", "").lower() if match else None


NGINX_CONSOLE = """\
# The gateway's console: plain HTTP until reconciler writes ROOT/nginx/ssl.conf (`ssl on;` and
# the certificate paths), then HTTPS. The package's default site stays on port 80.
server {
    listen 443;
    listen [::]:443;
    server_name gateway.test;
    include /opt/gateway/nginx/*.conf;
    location / {
        return 200 "gateway console\\n";
    }
}
"""

# Postfix serves STARTTLS with the key and chain reconciler keeps in ROOT/data/tls.pem (key
# first, then the leaf and its chain: what smtpd_tls_chain_files takes).
POSTFIX_SETUP = (
    "postconf -e 'smtpd_tls_chain_files = /opt/gateway/data/tls.pem' "
    "'smtpd_tls_security_level = may' && postconf -X smtpd_tls_cert_file smtpd_tls_key_file"
    " && systemctl restart postfix"
)


def make_pki() -> Pki:
    root = devpki.make_ca("Host Tier Root CA")
    intermediate = devpki.make_ca("Host Tier Intermediate CA", issuer=root)
    leaves = tuple(
        devpki.issue(intermediate, f"gateway{n}.test", sans=(f"gateway{n}.test",))
        for n in (1, 2, 3)
    )
    return Pki(root, intermediate, leaves, devpki.make_ca("Host Tier Partner CA"))


def build_wheelhouse() -> None:
    """`make wheelhouse` unless there is one (`make host-test` builds it first); -o: never
    rebuild the venv the tests are running from."""
    if not any(WHEELHOUSE.glob("mailgw_tls_reconciler-*.whl")):
        subprocess.run(
            ["make", "-C", str(REPO), "-o", ".venv/bin/.installed", "wheelhouse"], check=True
        )


def prepare_gateway(root: Path) -> None:
    """The gateway host's files before it boots: the console site beside nginx's default one,
    ROOT, and the directory GitOps tooling keeps the desired state in."""
    (root / "etc/nginx/sites-enabled/gateway").write_text(NGINX_CONSOLE)
    (root / "opt/gateway").mkdir(mode=0o755)
    (root / CHECKOUT.lstrip("/")).mkdir(parents=True)


@contextlib.contextmanager
def gateway_host(workdir: Path) -> Iterator[Host]:
    """A booted gateway host, Postfix set up as its operator would, nothing of reconciler's."""
    with booted(workdir, REPO, prepare_gateway, private_network=True) as machine:
        machine.sh(POSTFIX_SETUP)
        checkout = InPlaceCheckout(machine.path(CHECKOUT))
        yield Host(machine, make_pki(), checkout)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    build_wheelhouse()
    with gateway_host(tmp_path_factory.mktemp("host")) as booted_host:
        yield booted_host
