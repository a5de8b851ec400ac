"""Fixtures every layer's tests use: the session's throwaway PKI, a sandboxed install, a daemon."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.daemon import Daemon, DaemonStarter
from tests.helpers.sandbox import Sandbox
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
