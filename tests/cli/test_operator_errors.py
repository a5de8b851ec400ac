"""Errors an operator meets: a setting that points at the wrong thing stops the command with one
line naming it and creates nothing; a filter that can match nothing is a usage error; counts
read as English."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.cli.probereport import format_results
from reconciler.probe import ProbeResult
from tests.helpers.cli import run_cli
from tests.helpers.sandbox import Sandbox

Capsys = pytest.CaptureFixture[str]


def _files_under(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def _without(sandbox: Sandbox, setting: str, value: Path) -> None:
    """The sandbox's settings with `setting` pointing at `value` instead."""
    original = sandbox.write_config
    text = original().read_text()

    def write() -> Path:
        sandbox.config.write_text(
            "\n".join(
                f'{setting} = "{value}"' if line.startswith(f"{setting} =") else line
                for line in text.splitlines()
            )
            + "\n"
        )
        return sandbox.config

    sandbox.write_config = write  # type: ignore[method-assign]


@pytest.mark.parametrize("command", [["status"], ["apply"], ["plan"], ["audit", "show"], ["run"]])
def test_a_var_dir_that_is_a_file_is_named_as_the_setting_at_fault(
    command: list[str], sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    afile = sandbox.base / "afile"
    afile.write_text("not a directory\n")
    _without(sandbox, "var_dir", afile)
    before = _files_under(sandbox.root)

    code, out, err = run_cli(sandbox, monkeypatch, capsys, *command)

    assert code == 1, out + err
    assert f"var_dir {afile}: is not a directory (setting `var_dir`)" in err
    assert "mv " not in out + err, "no advice to move a file inside a file"
    assert afile.read_text() == "not a directory\n"
    assert _files_under(sandbox.root) == before


@pytest.mark.parametrize("setting", ["root", "state_dir"])
def test_apply_without_its_root_or_state_creates_nothing(
    setting: str, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    missing = sandbox.base / f"no-{setting}"
    _without(sandbox, setting, missing)

    code, _, err = run_cli(sandbox, monkeypatch, capsys, "apply")

    assert code == 1
    assert f"{setting} {missing}: does not exist (setting `{setting}` in " in err
    assert err.rstrip().endswith("nothing was changed")
    assert not sandbox.var.exists(), "no lock, audit log or status for a setup that cannot work"


def test_plan_against_a_missing_root_is_an_error_not_a_plan(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    missing = sandbox.base / "no-root"
    _without(sandbox, "root", missing)

    code, out, err = run_cli(sandbox, monkeypatch, capsys, "plan")

    assert code == 1, "exit 2 would promise changes that can never be applied"
    assert out == ""
    assert f"root {missing}: does not exist" in err


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--kind", "bogus", "unknown kind 'bogus' (one of identity, console,"),
        ("--event", "bogus", "unknown event 'bogus' (one of pass.started,"),
        ("--event", "pass.bogus", "unknown event 'pass.bogus'"),
    ],
)
def test_audit_show_filters_that_match_nothing_ever_are_usage_errors(
    flag: str, value: str, named: str, sandbox: Sandbox, capsys: Capsys
) -> None:
    from reconciler import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["audit", "show", flag, value])
    assert exited.value.code == 64
    assert f"argument {flag}: {named}" in capsys.readouterr().err


def test_audit_show_accepts_every_kind_event_and_family(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    code, out, _ = run_cli(
        sandbox, monkeypatch, capsys, "audit", "show", "--event", "pass", "--kind", "identity"
    )
    assert code == 0
    assert "pass.started" in out
    assert "pass.succeeded" in out
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "audit", "show", "--event", "pass.*")
    assert code == 0
    assert "change.applied" not in out


def test_a_bad_since_names_the_flag_once(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    code, _, err = run_cli(sandbox, monkeypatch, capsys, "audit", "show", "--since", "yesterday")
    assert code == 64
    assert err.startswith("reconciler: --since: 'yesterday': not an ISO 8601 date or time")
    assert err.count("--since") == 1


def test_one_trust_entry_is_counted_in_the_singular(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    code, out, err = run_cli(sandbox, monkeypatch, capsys, "validate")
    assert code == 0, err
    assert "1 trust entry, 2 profiles" in out + err
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "status")
    assert "trust           1 entry; soonest expiry" in out


def _result(server: int, servers: int, status: str) -> ProbeResult:
    return ProbeResult(
        name="relay",
        target=f"relay{server + 1}.example.com:465",
        scheme="smtps",
        tls="implicit",
        status=status,  # type: ignore[arg-type]
        detail="connect: Connection refused" if status != "trusted" else "verified",
        server=server,
        servers=servers,
    )


def test_a_one_server_profile_is_not_called_failover() -> None:
    alone = format_results([_result(0, 1, "unreachable")])
    assert "failed: relay: server 1 (relay1.example.com:465) failed\n" in alone
    assert "failover" not in alone
    pair = format_results([_result(0, 2, "unreachable"), _result(1, 2, "trusted")])
    assert "preferred server 1 (relay1.example.com:465) failed; server 2" in pair
    assert pair.split("\n")[3].endswith("passed (failover)")


def test_status_reads_nothing_it_cannot_and_writes_nothing(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """A var dir that does not exist yet is no error for `status`: nothing has run."""
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "status")
    assert "last applied    never" in out
    assert code != 1
    assert not os.path.exists(sandbox.var)
