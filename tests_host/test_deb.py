"""The Debian package on a booted Debian 12 gateway host: install, upgrade, remove, purge.

Two packages are built here with Debian's tools from the same locked wheels (`deploy/deb.sh`):
"the previous build" at a lower version, and this build. Both hold this tree's code: what an
upgrade exercises is dpkg's and the maintainer scripts' part (conffile, unit, restart), which is
the same whatever the code. apt installs them as an operator or configuration management would.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.waiting import wait_for
from tests_host.conftest import REPO, SETTINGS, Host, build_wheelhouse, gateway_host

pytestmark = pytest.mark.timeout(600)

PACKAGE = "mailgw-tls-reconciler"
VERSION = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)
THIS = VERSION.group(1) if VERSION else "0"
PREVIOUS = f"{THIS}~previous"


def build_deb(version: str) -> Path:
    subprocess.run(
        ["bash", str(REPO / "deploy" / "deb.sh"), "--no-lintian", version],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return next((REPO / "dist" / "deb").glob(f"{PACKAGE}_{version}_*.deb"))


@pytest.fixture(scope="module")
def debs() -> dict[str, Path]:
    build_wheelhouse()
    return {"previous": build_deb(PREVIOUS), "this": build_deb(THIS)}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, debs: dict[str, Path]) -> Iterator[Host]:
    with gateway_host(tmp_path_factory.mktemp("deb-host")) as booted_host:
        yield booted_host


def apt(host: Host, *argv: str) -> str:
    result = host.machine.run(
        "apt-get", "-y", "-q", "--no-install-recommends", *argv, check=False, timeout=300
    )
    assert result.returncode == 0, f"apt-get {' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def inside(deb: Path) -> str:
    return f"/src/{deb.relative_to(REPO)}"


def unit(host: Host) -> dict[str, str]:
    return host.machine.show(
        "reconciler", "ActiveState", "SubState", "StatusText", "MainPID", "InvocationID"
    )


def starts_of_the_unit(host: Host) -> int:
    """How many times systemd started reconciler.service so far (its own journal lines)."""
    out = host.machine.run("journalctl", "-u", "reconciler", "_PID=1", "-o", "cat").stdout
    return sum(1 for line in out.splitlines() if line.startswith("Started "))


def installed_version(host: Host) -> str:
    result = host.machine.run("dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE, check=False)
    return result.stdout.strip()


def test_apt_installs_the_previous_build_enabled_and_not_started(
    host: Host, debs: dict[str, Path]
) -> None:
    machine = host.machine
    apt(host, "install", inside(debs["previous"]))
    assert installed_version(host) == f"install ok installed {PREVIOUS}"
    assert machine.run("reconciler", "--version").stdout.strip() == f"reconciler {THIS}"
    assert machine.run("systemctl", "is-enabled", "reconciler").stdout.strip() == "enabled"
    assert unit(host)["ActiveState"] == "inactive"
    conffiles = machine.run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout
    assert SETTINGS in conffiles
    for path, mode in ((SETTINGS, "600"), ("/var/lib/reconciler", "700")):
        assert machine.run("stat", "-c", "%a %U", path).stdout.split() == [mode, "root"], path
    for hook in ("nginx-reload", "restart-service"):
        machine.run("test", "-x", f"/opt/reconciler/hooks/{hook}")
    # The manual page and the completions where man and the shells look (read from the package:
    # this machine's dpkg leaves manual pages out, as slim Debian images do).
    contents = subprocess.run(
        ["dpkg-deb", "--contents", str(debs["previous"])],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    for path in (
        "./usr/share/man/man1/reconciler.1.gz",
        "./usr/share/bash-completion/completions/reconciler",
        "./usr/share/zsh/vendor-completions/_reconciler",
        "./usr/share/fish/vendor_completions.d/reconciler.fish",
    ):
        assert f" {path}\n" in contents, path
    assert machine.path("/usr/share/bash-completion/completions/reconciler").is_file()
    # postinst compiled the program: the unit's read-only /opt needs no compiling at each start.
    assert machine.path(
        "/opt/reconciler/venv/lib/python3.11/site-packages/reconciler/__pycache__"
    ).is_dir()


def test_the_settings_edited_and_the_unit_started_serve_the_pushed_identity(host: Host) -> None:
    host.edit_settings(
        {'state_dir = "/srv/gitops/gateway/current"': 'state_dir = "/srv/gitops/gateway/checkout"'}
    )
    commit = host.push(host.pki.leaves[0])
    host.machine.run("systemctl", "start", "reconciler", timeout=300)
    state = unit(host)
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    assert commit in state["StatusText"]
    wait_for(
        lambda: host.serving(host.pki.leaves[0]),
        "nginx on 443 and Postfix on 25 to serve the identity",
        timeout=120,
    )


def test_an_upgrade_keeps_the_settings_and_restarts_the_daemon_once(
    host: Host, debs: dict[str, Path]
) -> None:
    settings = host.settings().read_bytes()
    before = unit(host)
    starts = starts_of_the_unit(host)
    out = apt(host, "install", inside(debs["this"]))
    assert "Unpacking" in out
    assert installed_version(host) == f"install ok installed {THIS}"
    assert host.settings().read_bytes() == settings  # the edited conffile, kept without asking
    after = unit(host)
    assert (after["ActiveState"], after["SubState"]) == ("active", "running")
    assert after["MainPID"] != before["MainPID"]
    assert after["InvocationID"] != before["InvocationID"]
    assert starts_of_the_unit(host) == starts + 1
    assert host.serving(host.pki.leaves[0])


def test_remove_keeps_settings_state_and_audit(host: Host) -> None:
    machine = host.machine
    pid = unit(host)["MainPID"]
    apt(host, "remove", PACKAGE)
    assert installed_version(host).startswith("deinstall ok config-files")
    still = machine.run("test", "-d", f"/proc/{pid}", check=False)
    assert still.returncode != 0, "the daemon outlived its package"
    assert not machine.path("/lib/systemd/system/reconciler.service").exists()
    assert not machine.path("/opt/reconciler").exists()
    assert not machine.path("/usr/bin/reconciler").exists()
    assert machine.path(SETTINGS).is_file()
    audit = machine.path("/var/lib/reconciler/audit.jsonl").read_text().splitlines()
    assert json.loads(audit[-1])["event"]
    # The gateway keeps serving what was applied: its files are its own.
    assert host.serving(host.pki.leaves[0])


def test_purge_removes_settings_state_and_audit(host: Host) -> None:
    """A desired state the operator keeps under /etc/reconciler (the default state_dir) is
    theirs: purge leaves it."""
    machine = host.machine
    operators = machine.path("/etc/reconciler/desired-state/gateway.toml")
    operators.parent.mkdir(parents=True)
    operators.write_text("[console]\nhttps = true\n")
    apt(host, "purge", PACKAGE)
    assert machine.run("dpkg-query", "-W", PACKAGE, check=False).returncode != 0
    for gone in (
        SETTINGS,
        "/var/lib/reconciler",
        "/etc/systemd/system/multi-user.target.wants/reconciler.service",
    ):
        assert not machine.path(gone).exists(), gone
    assert operators.read_text() == "[console]\nhttps = true\n"
    assert sorted(p.name for p in machine.path("/etc/reconciler").iterdir()) == ["desired-state"]
    assert machine.path("/opt/gateway/data/key.pem").is_file()


def test_lintian_reports_no_error_or_warning(debs: dict[str, Path]) -> None:
    result = subprocess.run(
        ["lintian", "--fail-on", "error,warning", str(debs["this"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
