"""`reconciler status`: what was applied and attempted, drift, suspension and expiry, for people
and for machines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli
from reconciler.source.state import read_snapshot
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki

FAILING_HOOK = """\
[[hooks]]
name = "restart-gateway"
on = ["identity"]
run = ["false"]
"""


@dataclass
class Cli:
    """The command line in this process (fast); `Sandbox.run` is the child-process twin."""

    box: Sandbox
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.box.write_config()
        self.monkeypatch.setenv("RECONCILER_CONFIG", str(self.box.config))
        code = cli.main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def status(self, expect: int = 0) -> dict[str, Any]:
        """`status --json`, which must exit `expect` (the monitoring check's code)."""
        code, out, err = self("status", "--json")
        assert code == expect, err + out
        value = json.loads(out)
        assert isinstance(value, dict)
        assert value["check"]["exit_code"] == code
        return value

    def text(self, expect: int = 0) -> str:
        code, out, err = self("status")
        assert code == expect, err + out
        return out

    def apply(self, expect: int = 0) -> None:
        code, _, err = self("apply")
        assert code == expect, err


@pytest.fixture
def run(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    return Cli(sandbox, monkeypatch, capsys)


def key_lines(pki: Pki) -> list[str]:
    return [line for line in pki.leaf.key_pem.decode().splitlines() if "-----" not in line]


def revision(box: Sandbox) -> str:
    return read_snapshot(box.state.path).revision


def var_files(box: Sandbox) -> dict[str, bytes]:
    if not box.var.exists():
        return {}
    return {str(p): p.read_bytes() for p in sorted(box.var.rglob("*")) if p.is_file()}


def test_status_before_any_pass(run: Cli, sandbox: Sandbox) -> None:
    before = var_files(sandbox)
    status = run.status(expect=5)
    assert status["check"]["state"] == "not-serving"
    assert status["last_applied"] is None
    assert status["last_attempt"] is None
    assert status["recent"] == []
    assert status["suspended"] is None
    assert status["identity"] is None
    assert status["trust"] == []
    assert status["desired"]["valid"] is True
    assert status["desired"]["revision"] == revision(sandbox)
    assert status["pending"]["changes"] > 0
    assert status["pending"]["drift"] == []
    text = run.text(expect=5)
    assert "check           not-serving: no pass has finished yet" in text
    assert "never" in text
    assert "none installed" in text
    assert var_files(sandbox) == before  # status reads, never writes


def test_status_after_apply(sandbox: Sandbox, pki: Pki) -> None:
    """The real command line, in child processes."""
    assert sandbox.run("apply").returncode == 0
    raw = sandbox.run("status", "--json", check=True).stdout
    assert all(line not in raw for line in key_lines(pki))
    status = json.loads(raw)
    rev = revision(sandbox)
    assert status["last_applied"]["revision"] == rev
    assert status["last_attempt"]["revision"] == rev
    assert status["last_attempt"]["outcome"] in ("converged", "no-change")
    assert status["recent"][0]["revision"] == rev
    assert {entry["outcome"] for entry in status["recent"]} <= {"converged", "no-change"}
    assert status["pending"] == {"changes": 0, "drift": [], "directories": []}
    identity = status["identity"]
    assert identity["subject"] == "CN=gateway.test"
    assert identity["path"] == str(sandbox.root / "data" / "cert.pem")
    assert 364 <= identity["days_left"] <= 365  # devpki leaves: 365 days from an hour ago
    [trust] = status["trust"]
    assert trust["path"] == str(sandbox.trust_dir / "reconciler-partner-ca.crt")
    assert trust["subject"] == "CN=Other Test CA"
    assert 3640 <= trust["days_left"] <= 3650

    text = sandbox.run("status", check=True).stdout
    assert all(line not in text for line in key_lines(pki))
    assert f"last applied    {rev} at " in text
    assert "identity        CN=gateway.test, expires " in text
    assert "days" in text
    assert "trust           1 entry;" in text
    assert "SUSPENDED" not in text
    assert "recent passes" in text


def test_one_apply_is_one_pass_in_status(run: Cli, sandbox: Sandbox) -> None:
    run.apply()
    status = run.status()
    assert status["last_attempt"]["outcome"] == "converged"
    assert status["last_attempt"]["changes"] == 7
    assert len(status["recent"]) == 1


def test_status_after_a_failed_apply(run: Cli, sandbox: Sandbox, pki: Pki) -> None:
    run.apply()
    good = revision(sandbox)
    sandbox.hooks = FAILING_HOOK
    sandbox.state.identity(pki, pki.leaf2)
    bad = revision(sandbox)
    assert bad != good
    run.apply(expect=1)

    status = run.status(expect=4)
    assert status["check"]["state"] == "failed"
    assert status["last_applied"]["revision"] == good
    attempt = status["last_attempt"]
    assert (attempt["revision"], attempt["outcome"]) == (bad, "failed")
    assert "restart-gateway" in attempt["reason"]
    assert status["recent"][0] == attempt
    assert status["recent"][-1]["revision"] == good
    assert status["identity"]["subject"] == "CN=gateway.test"  # the old leaf is back
    assert status["pending"]["changes"] == 3  # the new identity is still to be applied
    assert status["pending"]["drift"] == []

    text = run.text(expect=4)
    assert f"last applied    {good}" in text
    assert f"last attempt    {bad} at " in text
    assert ": failed (" in text
    assert "restart-gateway" in text


def test_status_after_a_rejected_state(run: Cli, sandbox: Sandbox) -> None:
    run.apply()
    good = revision(sandbox)
    sandbox.state.write("trust/broken.pem", b"not a certificate")
    run.apply(expect=1)
    status = run.status(expect=3)
    assert status["check"]["state"] == "rejected"
    assert status["last_applied"]["revision"] == good
    assert status["last_attempt"]["outcome"] == "rejected"
    assert "trust/broken.pem" in status["last_attempt"]["reason"]
    assert status["desired"]["valid"] is False
    assert any("trust/broken.pem" in e for e in status["desired"]["errors"])
    assert status["pending"] is None
    assert status["identity"]["subject"] == "CN=gateway.test"
    text = run.text(expect=3)
    assert "INVALID" in text
    assert "trust/broken.pem" in text


def test_status_shows_drift(run: Cli, sandbox: Sandbox) -> None:
    run.apply()
    inbound = sandbox.root / "data" / "smtp-inbound.json"
    inbound.write_text('{"tls": "off"}\n')
    (sandbox.root / "nginx" / "ssl.conf").unlink()
    status = run.status(expect=2)
    assert status["check"]["summary"] == "2 changes pending, 2 from drift"
    drift = sorted(status["pending"]["drift"], key=lambda d: d["path"])
    assert drift == [
        {"path": str(sandbox.root / "data" / "smtp-inbound.json"), "kind": "smtp_inbound",
         "action": "update"},
        {"path": str(sandbox.root / "nginx" / "ssl.conf"), "kind": "console", "action": "create"},
    ]  # fmt: skip
    assert status["pending"]["changes"] == 2
    text = run.text(expect=2)
    assert "pending         2 changes, 2 from drift" in text
    assert f"drift         update {inbound}" in text


def test_status_is_pending_while_a_directory_mode_is_to_be_set_back(
    run: Cli, sandbox: Sandbox
) -> None:
    """`plan` exits 2 for it; so does the monitoring check."""
    run.apply()
    (sandbox.root / "data").chmod(0o777)
    status = run.status(expect=2)
    assert status["check"]["state"] == "pending"
    assert (
        status["check"]["summary"]
        == "0 changes pending, 0 from drift; 1 directory mode to set back"
    )
    run.apply()
    assert run.status()["check"]["state"] == "converged"


def test_status_fails_while_a_link_stands_where_a_root_directory_belongs(
    run: Cli, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Before any pass saw it, a link at ROOT/data already means every pass fails: the check
    says so, not "the targets match"."""
    run.apply()
    data = sandbox.root / "data"
    elsewhere = tmp_path / "elsewhere"
    data.rename(elsewhere)
    data.symlink_to(elsewhere)
    status = run.status(expect=4)
    assert status["check"]["state"] == "failed"
    assert status["check"]["summary"].startswith("a pass cannot run: ")
    assert str(data) in status["check"]["summary"]


def test_status_while_suspended(run: Cli, sandbox: Sandbox, pki: Pki) -> None:
    run.apply()
    done = sandbox.run("suspend", "--reason", "maint")
    assert done.returncode == 0, done.stderr
    assert "suspended" in done.stdout

    status = run.status()
    assert status["check"]["summary"].endswith("(suspended)")
    assert status["suspended"]["reason"] == "maint"
    assert status["suspended"]["since"].endswith("Z")
    text = run.text()
    assert "SUSPENDED" in text
    assert "maint" in text

    # While suspended, a new desired state is validated and shown pending, not applied.
    sandbox.state.identity(pki, pki.leaf2)
    before = sandbox.targets()
    run.apply(expect=1)
    assert sandbox.targets() == before
    assert run.status(expect=2)["pending"]["changes"] == 3

    done = sandbox.run("resume")
    assert done.returncode == 0, done.stderr
    assert run.status(expect=2)["suspended"] is None  # not applied yet
    run.apply()
    assert run.status()["identity"]["subject"] == "CN=gateway2.test"


def test_suspend_without_reason(run: Cli) -> None:
    assert run("suspend")[0] == 0
    status = run.status(expect=5)
    assert status["suspended"]["reason"] is None
    assert "no reason given" in run.text(expect=5)
    assert run("resume")[0] == 0
    code, out, _ = run("resume")
    assert code == 0
    assert "not suspended" in out


def test_status_with_missing_state_dir(run: Cli, sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.state.path.rename(tmp_path / "moved")
    status = run.status(expect=5)
    assert status["desired"]["valid"] is False
    assert str(sandbox.state.path) in status["desired"]["errors"][0]
