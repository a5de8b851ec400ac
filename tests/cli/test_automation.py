"""For callers that are programs: `apply --json` and the exit status that says "changed"
(configuration management), and `plan --summary` for a plan too long to read line by line."""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki

Capsys = pytest.CaptureFixture[str]

FAILING_HOOK = '[[hooks]]\nname = "restart"\non = ["identity"]\nrun = ["false"]\n'


def test_apply_json_is_one_object_that_says_what_changed(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "apply", "--json")
    assert code == 0
    first = json.loads(out)
    assert first["outcome"] == "converged"
    assert first["changed"] is True
    assert first["ok"] is True
    assert first["revision"].startswith("sha256:")
    kinds = {c["kind"] for c in first["changes"]}
    assert kinds == {"identity", "console", "smtp_inbound", "trust", "profiles"}
    assert first["summary"]["identity"] == {"create": 3}
    assert first["summary"]["trust"] == {"create": 1}
    assert all(c["action"] == "create" and c["cause"] == "desired" for c in first["changes"])
    assert [w.split(":")[1] for w in first["warnings"]] == [" profiles/core.toml"]
    assert first["errors"] == []

    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "apply", "--json")
    again = json.loads(out)
    assert code == 0
    assert (again["outcome"], again["changed"], again["changes"]) == ("no-change", False, [])


def test_apply_json_reports_a_failed_pass_and_its_hooks(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys, pki: Pki
) -> None:
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    sandbox.hooks = FAILING_HOOK
    sandbox.state.identity(pki, pki.leaf2)
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "apply", "--json")
    result = json.loads(out)
    assert code == 1
    assert (result["outcome"], result["ok"], result["changed"]) == ("failed", False, False)
    assert "restart" in result["reason"]
    phases = [(h["hook"], h["phase"], h["exit_code"]) for h in result["hooks"]]
    assert phases == [("restart", "apply", 1), ("restart", "rollback", 1)]


def test_apply_json_of_a_rejected_state_lists_the_errors(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    sandbox.state.write("trust/broken.pem", b"not a certificate")
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "apply", "--json")
    result = json.loads(out)
    assert code == 1
    assert result["outcome"] == "rejected"
    assert any(e.startswith("error: trust/broken.pem") for e in result["errors"])


def test_detailed_exit_code_tells_changed_from_unchanged(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys, pki: Pki
) -> None:
    """0 nothing to change, 2 changed, 1 failed: an Ansible `changed_when: rc == 2`."""
    code, _, err = run_cli(sandbox, monkeypatch, capsys, "apply", "--detailed-exitcode")
    assert code == 2
    finished = [json.loads(line) for line in err.splitlines() if "apply.finished" in line]
    assert finished[0]["summary"].endswith(": applied 7 changes")
    assert run_cli(sandbox, monkeypatch, capsys, "apply", "--detailed-exitcode")[0] == 0
    sandbox.hooks = FAILING_HOOK
    sandbox.state.identity(pki, pki.leaf2)
    assert run_cli(sandbox, monkeypatch, capsys, "apply", "--detailed-exitcode")[0] == 1
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 1


def test_plan_summary_counts_by_kind(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "plan", "--summary")
    assert code == 2
    lines = out.splitlines()
    assert lines[0].endswith(": 7 changes")
    assert lines[1:] == [
        "  identity     3 create",
        "  console      1 create",
        "  smtp_inbound 1 create",
        "  trust        1 create",
        "  profiles     1 create",
    ]
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "plan", "--summary", "--json")
    document = json.loads(out)
    assert code == 2
    assert document["changes"] == 7
    assert document["summary"]["profiles"] == {"create": 1}


def test_plan_summary_shows_drift_and_deletes(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    (sandbox.root / "data" / "smtp-inbound.json").write_text("{}\n")
    sandbox.state.remove("trust/partner-ca.pem")
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "plan", "--summary")
    assert code == 2
    assert "  smtp_inbound 1 update (1 drift)" in out.splitlines()
    assert "  trust        1 delete" in out.splitlines()


def test_plan_summary_and_diff_do_not_mix(sandbox: Sandbox, capsys: Capsys) -> None:
    from reconciler import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["plan", "--summary", "--diff"])
    assert exited.value.code == 64
    assert "not allowed with argument" in capsys.readouterr().err
