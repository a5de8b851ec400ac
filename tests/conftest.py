"""Fixtures every layer's tests use: the session's throwaway PKI, a sandboxed install, a daemon."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.support.devpki import make_ca
from tests.helpers.daemon import Daemon, DaemonStarter
from tests.helpers.sandbox import DebianSandbox, Sandbox
from tests.helpers.state import Pki, make_pki, standard_state


@pytest.fixture(scope="session")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
def sandbox(tmp_path: Path, pki: Pki) -> Sandbox:
    box = Sandbox(tmp_path, standard_state(tmp_path / "state", pki))
    for directory in (box.root / "data", box.root / "nginx", box.trust_dir):
        directory.mkdir(parents=True)
    box.write_config()
    return box


@pytest.fixture
def start_daemon(sandbox: Sandbox) -> Iterator[Callable[..., Daemon]]:
    """Starts `reconciler run` on the sandbox (waiting for its first pass unless wait=False)."""
    starter = DaemonStarter(sandbox)
    yield starter
    starter.kill_all()


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
