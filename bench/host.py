"""On a booted Debian gateway host: the time from a push until both real clients see the identity.

The host tier's machine (tests_host: Debian 12 under systemd-nspawn with nginx on 80 and 443 and
Postfix on 25), reconciler installed with install.sh under the shipped unit and example settings.
Each push is a `git pull` of a new identity into the checkout; the figure is the time from just
before the first file is written until `openssl s_client` to 443 and `openssl s_client -starttls
smtp` to 25, both run inside the machine, present the new leaf. The two clients are asked in
turn without a pause, so the figure includes up to one round of asking. Needs root,
mmdebstrap and systemd-container; not part of the default run (`--only host`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import BenchError, Figure, Report, Stats, progress

if TYPE_CHECKING:
    from tests_host.conftest import Host

DEADLINE_S = 120


def host_push(report: Report, pushes: int) -> None:
    # The tier's own set-up: the machine and its gateway, exactly as the tests use them.
    from tests_host.conftest import build_wheelhouse, gateway_host

    build_wheelhouse()
    with (
        tempfile.TemporaryDirectory(prefix="bench-host-") as workdir,
        gateway_host(Path(workdir)) as host,
    ):
        seconds = _pushes(host, pushes)
    report.add(
        Figure(
            "host",
            "push to both clients seeing the new identity (nginx 443, Postfix 25)",
            "s",
            Stats.of(seconds),
            note="install.sh, shipped unit and example settings on a booted Debian 12",
        )
    )


def _pushes(host: Host, pushes: int) -> list[float]:
    """Install and start reconciler as the README says, then time each push."""
    machine = host.machine
    machine.sh(
        "cd /src && systemd/install.sh dist/wheelhouse/mailgw_tls_reconciler-*.whl "
        "--wheelhouse dist/wheelhouse"
    )
    current, checkout = "/srv/gitops/gateway/current", "/srv/gitops/gateway/checkout"
    host.edit_settings({f'state_dir = "{current}"': f'state_dir = "{checkout}"'})
    host.push(host.pki.leaves[0])
    machine.run("systemctl", "start", "reconciler", timeout=300)
    seconds: list[float] = []
    for number in range(pushes):
        leaf = host.pki.leaf(f"push{number}.test")
        started = time.monotonic()
        host.push(leaf)
        while not host.serving(leaf):
            if time.monotonic() - started > DEADLINE_S:
                raise BenchError(f"push {number} not served by both after {DEADLINE_S} s")
        seconds.append(time.monotonic() - started)
        progress(f"host: push {number}: {seconds[-1]:.2f} s")
    return seconds
