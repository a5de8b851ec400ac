"""Fixtures for the adapters' tests: real tools pointed at temporary directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.devpki import make_ca
from tests.helpers.sandbox import DebianSandbox


@pytest.fixture
def debian(tmp_path: Path) -> DebianSandbox:
    dirs = [tmp_path / name for name in ("share", "local", "etc-ssl-certs", "hooks")]
    for directory in dirs:
        directory.mkdir()
    system_ca = make_ca("Stand-in Distribution Root")
    # The distribution's CAs: without at least one, the script keeps a stale bundle when the
    # last local entry goes (it only replaces the bundle when it wrote a new one).
    (dirs[0] / "stand-in-root.crt").write_bytes(system_ca.cert_pem)
    conf = tmp_path / "ca-certificates.conf"
    conf.write_text("# stand-in for /etc/ca-certificates.conf\nstand-in-root.crt\n")
    share, local, etc, hooks = dirs
    return DebianSandbox(share, local, etc, hooks, conf=conf, system_ca=system_ca)
