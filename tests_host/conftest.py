"""The host tier's machine: a booted Debian with the system nginx in front of the gateway's ROOT."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.workspace import gateway_toml
from reconciler.support import devpki
from tests.helpers.gitops import InPlaceCheckout
from tests_host.machine import Machine, booted, free_port

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / "dist" / "wheelhouse"


@dataclass(frozen=True)
class Pki:
    """Generated at run time: a root, an intermediate, three gateway leaves, a partner CA."""

    root: devpki.Issued
    intermediate: devpki.Issued
    leaves: tuple[devpki.Issued, ...]
    partner_ca: devpki.Issued

    def chain(self, leaf: devpki.Issued) -> bytes:
        return leaf.cert_pem + self.intermediate.cert_pem


@dataclass
class Host:
    """The machine and what the tier set up on it."""

    machine: Machine
    pki: Pki
    checkout: InPlaceCheckout
    console_port: int
    metrics_port: int
    smtp_port: int

    def desired(self, leaf: devpki.Issued) -> dict[str, bytes]:
        """The whole desired state with `leaf` as the gateway's identity."""
        return {
            "gateway.toml": gateway_toml(),
            "tls/cert.pem": self.pki.chain(leaf),
            "tls/key.pem": leaf.key_pem,
            "trust/partner-ca.pem": self.pki.partner_ca.cert_pem,
        }

    def push(self, leaf: devpki.Issued) -> str:
        """A `git pull` of a new desired state in the machine's checkout; returns its commit."""
        commit = self.checkout.push(self.desired(leaf))
        assert commit is not None
        return commit


NGINX_SITE = """\
# The gateway's console: plain HTTP until reconciler writes ROOT/nginx/ssl.conf (`ssl on;` and
# the certificate paths), then HTTPS.
server {{
    listen 127.0.0.1:{port};
    server_name gateway.test;
    include /opt/gateway/nginx/*.conf;
    location / {{
        return 200 "gateway console\\n";
    }}
}}
"""

SMTPD_UNIT = """\
[Unit]
Description=stand-in for the gateway's SMTP service (restarted by the restart-service hook)

[Service]
ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 {port}

[Install]
WantedBy=multi-user.target
"""


def _make_pki() -> Pki:
    root = devpki.make_ca("Host Tier Root CA")
    intermediate = devpki.make_ca("Host Tier Intermediate CA", issuer=root)
    leaves = tuple(devpki.issue(intermediate, f"gateway{n}.test") for n in (1, 2, 3))
    return Pki(root, intermediate, leaves, devpki.make_ca("Host Tier Partner CA"))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if not any(WHEELHOUSE.glob("mailgw_tls_reconciler-*.whl")):
        # `make host-test` builds it first; this is for a bare `pytest tests_host`.
        # -o: never rebuild the venv the tests are running from.
        subprocess.run(
            ["make", "-C", str(REPO), "-o", ".venv/bin/.installed", "wheelhouse"], check=True
        )
    workdir = tmp_path_factory.mktemp("host")
    console_port, metrics_port, smtp_port = free_port(), free_port(), free_port()

    def prepare(root: Path) -> None:
        # The packaged default site listens on :80 of the shared network; the gateway's replaces it.
        (root / "etc/nginx/sites-enabled/default").unlink()
        (root / "etc/nginx/sites-enabled/gateway").write_text(NGINX_SITE.format(port=console_port))
        (root / "opt/gateway").mkdir(mode=0o755)
        unit = root / "etc/systemd/system/gateway-smtpd.service"
        unit.write_text(SMTPD_UNIT.format(port=smtp_port))
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(exist_ok=True)
        (wants / "gateway-smtpd.service").symlink_to("/etc/systemd/system/gateway-smtpd.service")
        (root / "srv/gitops/gateway").mkdir(parents=True)

    with booted(workdir, REPO, prepare) as machine:
        checkout = InPlaceCheckout(machine.path("/srv/gitops/gateway"))
        yield Host(machine, _make_pki(), checkout, console_port, metrics_port, smtp_port)
