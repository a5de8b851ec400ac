"""A fresh, empty ROOT converges: ROOT/data and ROOT/nginx are created 0755, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki, standard_state


def test_apply_on_an_empty_root_creates_data_and_nginx_0755(tmp_path: Path, pki: Pki) -> None:
    box = Sandbox(tmp_path, standard_state(tmp_path / "state", pki))
    box.root.mkdir()
    box.trust_dir.mkdir()
    # The systemd unit runs with UMask=0077 (the child inherits ours); nginx must still read.
    previous = os.umask(0o077)
    try:
        result = box.run("apply")
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    for name in ("data", "nginx"):
        assert stat.S_IMODE((box.root / name).stat().st_mode) == 0o755, name
    assert (box.root / "data" / "cert.pem").read_bytes() == pki.chain()
    assert (box.root / "nginx" / "ssl.conf").is_file()


def test_apply_without_root_fails_naming_it_and_creates_nothing(tmp_path: Path, pki: Pki) -> None:
    box = Sandbox(tmp_path, standard_state(tmp_path / "state", pki))
    box.trust_dir.mkdir()
    result = box.run("apply")
    assert result.returncode == 1
    assert str(box.root) in result.stderr + result.stdout
    assert not box.root.exists()
