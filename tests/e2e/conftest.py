"""Fixtures for the end-to-end tests: a real nginx serving ROOT, a supervised demo service."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.hook_scripts import SERVER, SUPERVISOR, kill_tree, listener_on, write_identity
from tests.helpers.net import free_port
from tests.helpers.nginx import NginxServer, require_nginx
from tests.helpers.state import Pki
from tests.helpers.waiting import wait_for


@pytest.fixture
def service_script(tmp_path: Path) -> Path:
    """The demo service, named uniquely: the hook signals every process of that name."""
    path = tmp_path / f"demo-smtpd-{os.getpid()}-{free_port()}"
    path.write_text(SERVER)
    return path


@pytest.fixture
def supervised(tmp_path: Path, service_script: Path) -> Iterator[tuple[int, str]]:
    """The demo service under a restart-forever supervisor; yields its port and name."""
    supervisor = tmp_path / "supervisor.py"
    supervisor.write_text(SUPERVISOR)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(supervisor), sys.executable, str(service_script), str(port)],
        start_new_session=True,
    )
    try:
        wait_for(lambda: listener_on(port, service_script.name), "the service did not listen")
        yield port, service_script.name
    finally:
        kill_tree(proc)


@pytest.fixture
def nginx(tmp_path: Path, pki: Pki) -> Iterator[NginxServer]:
    require_nginx()
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "nginx").mkdir()
    write_identity(root, pki.leaf, pki)
    (root / "nginx" / "ssl.conf").write_text(
        f'ssl_certificate "{root}/data/cert.pem";\nssl_certificate_key "{root}/data/key.pem";\n'
    )
    with NginxServer(tmp_path, root).start() as server:
        yield server
