"""systemd/install.sh run for real, sealed off: a private mount namespace, /etc under an overlay.

The booted-host tier (tests_host/) runs the whole installation on Debian; this runs the script
itself on this machine without touching it: /opt is a tmpfs and /etc an overlay whose writes land
in a temporary directory, `systemctl` and the interpreter are stand-ins that only say what they
were asked, and the shipped files come from this repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)

FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
case "$1" in is-active) exit 3 ;; cat) exit 1 ;; esac
exit 0
"""
# `python3 -m venv DIR` makes a venv whose python accepts pip and whose reconciler answers.
FAKE_PYTHON = """#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python"
  printf '#!/bin/sh\\ncase "$1" in --print-share-dir) echo "%s" ;; *) echo r ;; esac\\n' \
    "$SHARE" > "$3/bin/reconciler"
  chmod +x "$3/bin/python" "$3/bin/reconciler"
fi
"""


def install(tmp_path: Path, before: str) -> tuple[str, str]:
    """Run install.sh after `before` (shell) in a sealed namespace: (what it printed, then the
    mode of /etc/reconciler and the reachability of a key file under it, as `stat` says)."""
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for name, body in (("systemctl", FAKE_SYSTEMCTL), ("python3", FAKE_PYTHON)):
        (fakes / name).write_text(body)
        (fakes / name).chmod(0o755)
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "requirements.txt").write_text("")
    (wheelhouse / "mailgw_tls_reconciler-0-py3-none-any.whl").write_text("")
    for name in ("upper", "work"):
        (tmp_path / name).mkdir()
    script = f"""
set -e
mount -t tmpfs tmpfs /opt
mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp_path}/upper,workdir={tmp_path}/work /etc
rm -rf /etc/reconciler
{before}
bash {REPO}/systemd/install.sh {wheelhouse}/mailgw_tls_reconciler-0-py3-none-any.whl \\
  --wheelhouse {wheelhouse}
echo "MODE $(stat -c %a /etc/reconciler)"
"""
    env = {
        **os.environ,
        "PATH": f"{fakes}:{os.environ['PATH']}",
        "PYTHON": str(fakes / "python3"),
        "SHARE": str(REPO),
        "FAKE_LOG": str(tmp_path / "systemctl.log"),
    }
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    mode = done.stdout.rsplit("MODE ", 1)[1].strip()
    return done.stdout, mode


@pytest.mark.parametrize(
    ("before", "mode"),
    [
        ("", "700"),  # created closed
        ("mkdir -m 0700 /etc/reconciler", "700"),  # the issue's: it was re-opened to 0755
        ("mkdir -m 0750 /etc/reconciler", "750"),  # an operator's group access is kept
        ("mkdir -m 0710 /etc/reconciler", "710"),
    ],
    ids=["missing", "closed", "group", "group-search"],
)
def test_install_sh_never_opens_the_settings_directory(
    tmp_path: Path, before: str, mode: str
) -> None:
    printed, found = install(tmp_path, before)
    assert found == mode
    assert "wrote /etc/reconciler/reconciler.toml from the example" in printed


def test_install_sh_closes_a_directory_an_earlier_install_left_open(tmp_path: Path) -> None:
    """The default state_dir is under /etc/reconciler: a git checkout there leaves its
    tls/key.pem 0644, readable by anyone who can enter the directory."""
    before = (
        "mkdir -m 0755 /etc/reconciler && mkdir -p /etc/reconciler/desired-state/tls && "
        "touch /etc/reconciler/desired-state/tls/key.pem && "
        "chmod 0644 /etc/reconciler/desired-state/tls/key.pem"
    )
    printed, found = install(tmp_path, before)
    assert found == "750"
    assert "closed /etc/reconciler to other users (it was 755)" in printed


def test_the_unit_creates_the_settings_directory_closed() -> None:
    unit = (REPO / "systemd" / "reconciler.service").read_text()
    assert "ConfigurationDirectory=reconciler\n" in unit
    assert "ConfigurationDirectoryMode=0700\n" in unit
