"""The command line: exit codes, messages naming file and reason; bad states change nothing."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import pytest

import reconciler.reconcile as reconcile_face
from reconciler import cli
from reconciler.reconcile.runner import PassMemory, PassResult
from tests.helpers.cli import REJECTED, WARNED, absolute_key, run_cli
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki


@pytest.mark.parametrize("case", sorted(REJECTED), ids=sorted(REJECTED))
def test_rejected_state_names_file_and_reason_and_changes_nothing(
    case: str,
    sandbox: Sandbox,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mutate, file, words = REJECTED[case]
    code, _, err = run_cli(sandbox, monkeypatch, capsys, "apply")
    assert code == 0, err
    before = sandbox.targets()

    mutate(sandbox.state, pki, tmp_path)

    code, _, err = run_cli(sandbox, monkeypatch, capsys, "validate")
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert any(file in line and words in line for line in errors), err
    code, _out, err = run_cli(sandbox, monkeypatch, capsys, "apply")
    assert code == 1
    assert "nothing was applied" in err
    assert sandbox.targets() == before


@pytest.mark.parametrize("case", sorted(WARNED), ids=sorted(WARNED))
def test_warning_is_printed_and_does_not_block(
    case: str,
    sandbox: Sandbox,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mutate, file, words = WARNED[case]
    mutate(sandbox.state, pki, tmp_path)
    code, _out, err = run_cli(sandbox, monkeypatch, capsys, "validate")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any(file in line and words in line for line in warnings), err
    code, _, err = run_cli(sandbox, monkeypatch, capsys, "apply")
    assert code == 0, err


def test_all_errors_are_reported_in_one_run(
    sandbox: Sandbox,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox.state.write("trust/broken.pem", b"nope")
    sandbox.state.profile("bad", 'url = "ftp://x.example.com"\n')
    sandbox.state.write("tls/key.pem", pki.leaf2.key_pem)
    code, _, err = run_cli(sandbox, monkeypatch, capsys, "validate")
    assert code == 1
    for file in ("trust/broken.pem", "profiles/bad.toml", "tls/key.pem"):
        assert any(file in line for line in err.splitlines() if line.startswith("error:")), err


def test_absolute_key_inside_key_dirs_is_accepted(
    sandbox: Sandbox,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    absolute_key(sandbox.state, pki, tmp_path)
    sandbox.extra = f'key_dirs = ["{tmp_path / "secrets"}"]'
    code, _, err = run_cli(sandbox, monkeypatch, capsys, "apply")
    assert code == 0, err
    assert (sandbox.root / "data/key.pem").read_bytes() == pki.leaf.key_pem


def test_plan_exit_codes_and_json(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "plan", "--json")
    assert code == 2
    planned = json.loads(out)
    by_path = {c["path"]: c for c in planned["changes"]}
    cert = by_path[str(sandbox.root / "data/cert.pem")]
    assert cert["action"] == "create"
    assert cert["before_sha256"] is None
    assert cert["certificates"][0]["subject"] == "CN=gateway.test"
    not_after = cert["certificates"][0]["not_after"]
    assert not_after.endswith("Z"), not_after
    assert cert["mode"] == "0644"
    assert by_path[str(sandbox.root / "data/key.pem")]["mode"] == "0600"
    assert by_path[str(sandbox.trust_dir / "reconciler-partner-ca.crt")]["kind"] == "trust"

    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    records = [json.loads(line) for line in (sandbox.var / "audit.jsonl").read_text().splitlines()]
    applied = [r for r in records if r["event"] == "change.applied" and r["path"] == cert["path"]]
    assert applied[0]["not_after"] == not_after  # one time format: the plan's and the record's
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "plan")
    assert code == 0
    assert "no changes" in out


def test_plan_shows_subject_and_expiry_never_key_bytes(
    sandbox: Sandbox, pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(sandbox, monkeypatch, capsys, "plan")
    assert code == 2
    assert "subject CN=gateway.test, expires" in out
    body = [line for line in pki.leaf.key_pem.decode().splitlines() if "-----" not in line]
    assert not any(line in out + err for line in body)


def test_usage_errors_exit_64() -> None:
    for argv in (["frobnicate"], ["plan", "--no-such-flag"], [], ["audit"]):
        with pytest.raises(SystemExit) as raised:
            cli.main(argv)
        assert raised.value.code == 64, argv


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["validate"],
        ["plan"],
        ["apply"],
        ["run"],
        ["status"],
        ["suspend"],
        ["resume"],
        ["audit"],
        ["audit", "show"],
        ["audit", "verify"],
        ["probe"],
        ["schema"],
    ],
    ids=lambda a: " ".join(a) or "top",
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main([*argv, "--help"])
    assert raised.value.code == 0
    assert "usage: reconciler" in capsys.readouterr().out


def test_global_flags_work_before_and_after_the_command(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(sandbox, monkeypatch, capsys, "--state", str(empty), "validate")[0] == 1
    assert run_cli(sandbox, monkeypatch, capsys, "validate", "--state", str(empty))[0] == 1
    assert run_cli(sandbox, monkeypatch, capsys, "validate")[0] == 0


def test_garbage_collection_is_off_only_for_start_up(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main` turns the collector off while modules load (and for all of `validate`); a command
    that goes on to real work runs with it on, and it is on again after any command."""
    seen: list[bool] = []
    real_reconcile = reconcile_face.reconcile

    def noting(*args: Any) -> tuple[PassResult, PassMemory]:
        seen.append(gc.isenabled())
        return real_reconcile(*args)

    monkeypatch.setattr(reconcile_face, "reconcile", noting)  # what the commands call
    with pytest.raises(SystemExit):
        cli.main(["validate", "--no-such-flag"])
    assert gc.isenabled()
    assert run_cli(sandbox, monkeypatch, capsys, "validate")[0] == 0
    assert gc.isenabled()
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    assert seen == [True]
    assert gc.isenabled()


def test_schema_describes_both_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["gateway.toml"]["additionalProperties"] is False
    assert "transport_encryption" in schema["profiles/NAME.toml"]["properties"]


def test_validate_needs_no_root_var_dir_or_settings(tmp_path: Path, pki: Pki) -> None:
    """A GitOps repository's CI: only --state; ROOT and var_dir need not exist and stay absent."""
    import subprocess
    import sys

    from tests.helpers.state import standard_state

    state = standard_state(tmp_path / "repo", pki)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["RECONCILER_VAR_DIR"] = str(tmp_path / "var")
    result = subprocess.run(  # noqa: PLW1510 - the exit code is the assertion
        [
            sys.executable,
            "-m",
            "reconciler",
            "--state",
            str(state.path),
            "--root",
            str(tmp_path / "root"),
            "validate",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "valid, revision sha256:" in result.stdout
    assert not (tmp_path / "var").exists()
    assert not (tmp_path / "root").exists()


def test_real_binary_apply_writes_targets_with_modes(sandbox: Sandbox, pki: Pki) -> None:
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    data = sandbox.root / "data"
    assert (data / "key.pem").read_bytes() == pki.leaf.key_pem
    assert (data / "cert.pem").read_bytes() == pki.chain()
    assert (data / "tls.pem").read_bytes() == pki.leaf.key_pem + pki.chain()
    assert (data / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (data / "tls.pem").stat().st_mode & 0o777 == 0o600
    assert (data / "cert.pem").stat().st_mode & 0o777 == 0o644
    assert (sandbox.root / "nginx/ssl.conf").stat().st_mode & 0o777 == 0o644
    inbound = json.loads((data / "smtp-inbound.json").read_text())
    assert inbound == {
        "tls": "optional",
        "cert_file": str(data / "cert.pem"),
        "key_file": str(data / "key.pem"),
    }
    assert (sandbox.trust_dir / "reconciler-partner-ca.crt").read_bytes() == pki.other_ca.cert_pem
    # the directory backend's refresh ran: it made the hash link
    assert any(p.is_symlink() for p in sandbox.trust_dir.iterdir())
    again = sandbox.run("apply")
    assert again.returncode == 0
    # JSON logs (the sandbox's): the summary is a log record too, on stderr.
    finished = [json.loads(line) for line in again.stderr.splitlines() if "apply.finished" in line]
    assert finished[0]["outcome"] == "no-change", again.stderr
    assert "already converged" in finished[0]["summary"]


def test_warnings_are_audited_once_per_revision_not_per_run(sandbox: Sandbox) -> None:
    sandbox.state.profile("mx", 'url = "smtp://mx.example.com"\ntransport_encryption = "none"\n')
    for _ in range(3):
        assert sandbox.run("apply").returncode == 0
    shown = sandbox.run("audit", "show", "--json", "--event", "warning").stdout.splitlines()
    assert len([line for line in shown if "profiles/mx.toml" in line]) == 1


def test_output_into_a_closed_pipe_is_quiet(sandbox: Sandbox) -> None:
    import subprocess
    import sys

    sandbox.write_config()
    env = {**os.environ, "RECONCILER_CONFIG": str(sandbox.config)}
    producer = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert producer.stdout is not None
    producer.stdout.close()  # before the child can have written: its first write hits EPIPE
    _, err = producer.communicate(timeout=30)
    assert b"Traceback" not in err


def test_a_target_directory_that_is_a_link_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    """ROOT/data is the reconciler's: a link there is not followed (ROOT itself may be one, or
    a mount point); tests/e2e/test_root_links.py tries every such link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (sandbox.root / "data").rmdir()
    (sandbox.root / "data").symlink_to(elsewhere)
    result = sandbox.run("apply")
    assert result.returncode == 1
    assert f"{sandbox.root / 'data'}: is a symbolic link" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_directory_named_like_a_trust_entry_is_not_ours(sandbox: Sandbox) -> None:
    """Planning, status and metrics share one notion of "our trust files": a directory that
    happens to carry the prefix is the operator's and is never planned for deletion."""
    odd = sandbox.trust_dir / "reconciler-notes.crt"
    odd.mkdir()
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    assert odd.is_dir()
    assert sandbox.run("plan").returncode == 0
    status = json.loads(sandbox.run("status", "--json").stdout)
    assert [Path(t["path"]).name for t in status["trust"]] == ["reconciler-partner-ca.crt"]
