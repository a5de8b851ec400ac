"""The host tier and install.sh, checked statically (the tier itself runs in make host-test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False, timeout=120)


def test_host_tier_passes_ruff_check_and_format() -> None:
    for argv in (("check", "tests_host"), ("format", "--check", "tests_host")):
        result = _run(str(BIN / "ruff"), *argv)
        assert result.returncode == 0, result.stdout + result.stderr


def test_install_sh_parses_and_refuses_bad_usage() -> None:
    script = str(REPO / "systemd" / "install.sh")
    assert _run("bash", "-n", script).returncode == 0
    # Usage errors are found before anything is installed (and before the root check matters).
    for argv in ((), ("--bogus",), ("a.whl", "b.whl"), ("--uninstall", "x.whl")):
        result = _run("bash", script, *argv)
        if result.returncode == 1:  # not root: said so, and nothing else happened
            assert "run as root" in result.stderr
            continue
        assert result.returncode == 64, (argv, result.stderr)
        assert "usage: install.sh" in result.stderr
