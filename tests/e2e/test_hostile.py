"""Hostile and odd inputs: each reproduction of issue 12, from a valid, applied sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.audit.verifier import verify
from tests.helpers import REPO
from tests.helpers.cli import run_cli
from tests.helpers.passes import crash_apply_at
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki

TIMEOUT_S = 120  # generous: the machine is shared; a hang still fails


def run(
    box: Sandbox, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command line in a child; a hang fails the test at TIMEOUT_S."""
    box.write_config()
    environ = {**os.environ, **box.env, **(env or {}), "RECONCILER_CONFIG": str(box.config)}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=TIMEOUT_S,
        check=False,
        cwd=REPO,
        errors="surrogateescape",
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


@pytest.fixture
def applied(sandbox: Sandbox) -> Sandbox:
    result = run(sandbox, "apply")
    assert result.returncode == 0, result.stderr
    return sandbox


def audit_records(box: Sandbox) -> list[dict[str, object]]:
    path = box.var / "audit.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def change_profile(box: Sandbox) -> None:
    box.state.profile("relay", 'url = "smtps://relay2.example.com"\n')


# --- A: text the audit writer refused ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"notes-\xff.txt", b"x PRIVATE KEY-----", b"esc-\x1b[2J.txt"],
    ids=["ff", "marker", "esc"],
)
def test_odd_stray_file_name_in_trust_does_not_crash_apply(applied: Sandbox, name: bytes) -> None:
    (applied.state.path / "trust").joinpath(os.fsdecode(name)).write_bytes(b"notes\n")
    change_profile(applied)
    assert run(applied, "validate").returncode == 0
    result = run(applied, "apply")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert verify([applied.var / "audit.jsonl"]).ok
    assert "\x1b" not in result.stderr
    assert any(r["event"] == "change.applied" for r in audit_records(applied))


def test_ca_subject_with_a_key_marker_applies_and_commits(applied: Sandbox) -> None:
    from reconciler.support import devpki

    odd = devpki.make_ca("Evil PRIVATE KEY----- CA")
    applied.state.trust("odd", odd.cert_pem)
    result = run(applied, "apply")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert not (applied.var / "journal.json").exists()
    applied_records = [r for r in audit_records(applied) if r["event"] == "change.applied"]
    assert any("odd" in json.dumps(r) for r in applied_records)
    assert verify([applied.var / "audit.jsonl"]).ok


# --- B: key material echoed --------------------------------------------------------------------


def test_inline_key_is_never_printed(applied: Sandbox, pki: Pki) -> None:
    key = pki.leaf.key_pem.decode()
    text = (applied.state.path / "gateway.toml").read_text()
    applied.state.write("gateway.toml", text.replace('key = "tls/key.pem"', f'key = """{key}"""'))
    body = [line for line in key.splitlines() if "-----" not in line]
    for args in (("validate",), ("plan",), ("plan", "--json"), ("status",), ("status", "--json")):
        result = run(applied, *args)
        no_traceback(result)
        for line in body:
            assert line not in result.stdout + result.stderr, args
    assert "identity.key" in run(applied, "validate").stderr


# --- C: tracebacks or hangs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gateway", "words"),
    [
        ('[identity]\ncert = "tls/cert\\u0000.pem"\nkey = "tls/key.pem"\n', "control character"),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
        ("[policy]\nx = " + "9" * 5000 + "\n", "64 bits"),
    ],
    ids=["nul-in-path", "deep-nesting", "huge-integer"],
)
def test_hostile_toml_is_a_clear_error(applied: Sandbox, gateway: str, words: str) -> None:
    before = applied.targets()
    applied.state.write("gateway.toml", gateway)
    for args in (("validate",), ("plan",), ("apply",)):
        result = run(applied, *args)
        no_traceback(result)
        assert result.returncode == 1, (args, result.stderr)
        assert "gateway.toml" in result.stderr
        assert words in result.stderr, result.stderr
    assert applied.targets() == before


def test_directory_at_a_target_fails_the_pass_naming_it(applied: Sandbox) -> None:
    target = applied.root / "data" / "smtp-inbound.json"
    target.unlink()
    target.mkdir()
    change_profile(applied)
    for args in (("plan",), ("status",)):
        no_traceback(run(applied, *args))
    result = run(applied, "apply")
    no_traceback(result)
    assert result.returncode == 1
    assert str(target) in result.stderr
    assert target.is_dir()


def test_fifo_at_a_target_does_not_hang_status(applied: Sandbox) -> None:
    target = applied.root / "data" / "cert.pem"
    target.unlink()
    os.mkfifo(target)
    for args in (("status",), ("plan",), ("apply",)):
        no_traceback(run(applied, *args))
    assert target.exists()


def test_fifo_as_git_head_does_not_hang_validate(applied: Sandbox) -> None:
    git = applied.state.path / ".git"
    git.mkdir()
    os.mkfifo(git / "HEAD")
    result = run(applied, "validate")
    no_traceback(result)
    assert result.returncode == 0


def test_git_head_linked_to_dev_zero_is_not_read(applied: Sandbox) -> None:
    git = applied.state.path / ".git"
    git.mkdir()
    (git / "HEAD").symlink_to("/dev/zero")
    result = run(applied, "validate")
    no_traceback(result)
    assert result.returncode == 0


def test_root_with_non_ascii_characters_applies(tmp_path: Path, pki: Pki) -> None:
    from tests.helpers.state import standard_state

    box = Sandbox(tmp_path, standard_state(tmp_path / "state", pki), root_dir=tmp_path / "rööt-€")
    for directory in (box.root / "data", box.root / "nginx", box.trust_dir):
        directory.mkdir(parents=True)
    result = run(box, "apply")
    no_traceback(result)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b"[]", b"\xff\xfe"], ids=["empty", "bad", "list", "binary"]
)
@pytest.mark.parametrize("name", ["journal.json", "status.json"])
def test_corrupt_var_file_is_one_clear_line(applied: Sandbox, name: str, content: bytes) -> None:
    (applied.var / name).write_bytes(content)
    for args in (("apply",), ("status",)):
        result = run(applied, *args)
        no_traceback(result)
        if name == "journal.json" and args == ("apply",):
            assert str(applied.var / name) in result.stderr
            if content:
                assert result.returncode == 1
            else:
                # What a crash leaves of a journal it was writing (see the next test): it
                # had touched no target, so it is removed and the pass goes on.
                assert result.returncode == 0, result.stderr
                assert "unfinished" in result.stderr
                assert not (applied.var / name).exists()


def _crash_right_after_the_journal(box: Sandbox, pki: Pki) -> Path:
    """A new identity applied until its journal is durable, then the process dead: the journal."""
    box.state.identity(pki, pki.leaf2)
    crash_apply_at(box, "journal-prepared")
    return box.var / "journal.json"


@pytest.mark.parametrize(
    "cut", [0, 1, 20, -2], ids=["empty", "one-byte", "after-entries", "all-but-its-last-brace"]
)
@pytest.mark.parametrize("zeros", [0, 4096], ids=["", "zero-filled"])
def test_a_journal_cut_short_by_a_crash_is_removed_and_the_pass_goes_on(
    applied: Sandbox, pki: Pki, cut: int, zeros: int
) -> None:
    """A journal is written once in place, before any target is touched: a crash while it is
    written leaves a beginning of it (zeros after it on some file systems). Recovery removes
    that, with the pass's staging and temp files, audits it, and the next pass applies."""
    before = applied.targets()
    journal = _crash_right_after_the_journal(applied, pki)
    whole = journal.read_bytes()
    assert {k: v for k, v in applied.targets().items() if ".reconciler-tmp-" not in k} == before
    journal.write_bytes(whole[:cut] + b"\0" * zeros)
    assert list((applied.var / "txn").iterdir())
    assert list((applied.root / "data").glob(".reconciler-tmp-*"))

    status = run(applied, "status", "--json")
    assert "unfinished" in json.loads(status.stdout)["interrupted_pass"]["error"]
    result = run(applied, "apply")
    assert result.returncode == 0, result.stderr
    assert f"{journal}: unfinished" in result.stderr
    assert not journal.exists()
    assert not list((applied.var / "txn").iterdir())
    assert not list((applied.root / "data").glob(".reconciler-tmp-*"))
    assert run(applied, "plan").returncode == 0
    warnings = [r for r in audit_records(applied) if r["event"] == "warning"]
    assert any(f"{journal}: unfinished" in str(r["reason"]) for r in warnings)


def test_a_damaged_whole_journal_is_not_guessed_at(applied: Sandbox, pki: Pki) -> None:
    """A journal that ends as a whole one does but does not read is not a crash's doing: the
    pass stops, naming it, and nothing is touched until the operator has looked."""
    journal = _crash_right_after_the_journal(applied, pki)
    whole = journal.read_bytes()
    journal.write_bytes(whole[:40] + b"#" + whole[41:])
    before = applied.targets()
    result = run(applied, "apply")
    assert result.returncode == 1
    assert f"{journal}: not a journal" in result.stderr
    assert journal.exists()
    assert applied.targets() == before


# --- D: accepted when it should not be ---------------------------------------------------------


def test_trust_name_ending_in_a_newline_is_rejected(applied: Sandbox, pki: Pki) -> None:
    applied.state.write("trust/partner\n.pem", pki.other_ca.cert_pem)
    result = run(applied, "validate")
    assert result.returncode == 1
    assert "must match" in result.stderr


def test_ca_certificate_as_identity_leaf_is_rejected(applied: Sandbox, pki: Pki) -> None:
    applied.state.write("tls/cert.pem", pki.intermediate.cert_pem + pki.root.cert_pem)
    applied.state.write("tls/key.pem", pki.intermediate.key_pem)
    result = run(applied, "validate")
    assert result.returncode == 1
    assert "tls/cert.pem" in result.stderr
    assert "CA" in result.stderr


def test_path_into_a_kubelet_dotdot_directory_is_rejected(applied: Sandbox, pki: Pki) -> None:
    hidden = applied.state.path / "..2026_01_01_00_00_00.123"
    hidden.mkdir()
    (hidden / "cert.pem").write_bytes(pki.chain())
    text = (applied.state.path / "gateway.toml").read_text()
    applied.state.write(
        "gateway.toml", text.replace("tls/cert.pem", "..2026_01_01_00_00_00.123/cert.pem")
    )
    result = run(applied, "validate")
    assert result.returncode == 1, result.stderr
    assert "identity.cert" in result.stderr


# --- E: valid states that fail at apply --------------------------------------------------------


def test_trust_file_with_two_cas_applies_with_the_directory_backend(
    applied: Sandbox, pki: Pki
) -> None:
    applied.state.trust("bundle", pki.root.cert_pem + pki.intermediate.cert_pem)
    result = run(applied, "apply")
    assert result.returncode == 0, result.stderr


def test_same_ca_under_two_names_applies_and_warns_naming_both(applied: Sandbox, pki: Pki) -> None:
    applied.state.trust("partner-copy", pki.other_ca.cert_pem)
    result = run(applied, "validate")
    assert result.returncode == 0
    assert "trust/partner-ca.pem" in result.stderr
    assert "trust/partner-copy.pem" in result.stderr
    result = run(applied, "apply")
    assert result.returncode == 0, result.stderr


def test_empty_root_gets_its_directories(sandbox: Sandbox) -> None:
    for name in ("data", "nginx"):
        (sandbox.root / name).rmdir()
    result = run(sandbox, "apply")
    assert result.returncode == 0, result.stderr
    assert (sandbox.root / "data" / "cert.pem").is_file()
    assert (sandbox.root / "nginx").stat().st_mode & 0o777 == 0o755


def test_missing_root_is_one_line_naming_it(sandbox: Sandbox) -> None:
    for name in ("data", "nginx"):
        (sandbox.root / name).rmdir()
    sandbox.root.rmdir()
    result = run(sandbox, "apply")
    no_traceback(result)
    assert result.returncode == 1
    assert str(sandbox.root) in result.stderr
    assert ".reconciler-tmp" not in result.stderr


# --- F: operations -----------------------------------------------------------------------------


def test_misspelled_environment_setting_is_an_error(applied: Sandbox) -> None:
    result = run(applied, "apply", env={"RECONCILER_VERIFY_CONSOLE": "127.0.0.1:1"})
    no_traceback(result)
    assert result.returncode != 0
    assert "RECONCILER_VERIFY_CONSOLE" in result.stderr


def test_apply_prints_warnings_of_a_pass_that_changes_files(applied: Sandbox) -> None:
    applied.state.profile("clear", 'url = "http://core.example.com"\n')
    result = run(applied, "apply")
    assert result.returncode == 0, result.stderr
    assert "profiles/clear.toml" in result.stderr


def test_many_stray_files_give_one_warning_per_directory(applied: Sandbox) -> None:
    trust = applied.state.path / "trust"
    for n in range(2000):
        (trust / f"stray-{n}.txt").write_bytes(b"")
    result = run(applied, "validate")
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "stray-" in line]
    assert len(warnings) == 1, warnings[:5]
    assert "2000" in warnings[0]


def test_no_space_during_the_swap_names_the_target(applied: Sandbox) -> None:
    change_profile(applied)
    target = applied.root / "data" / "server-profiles.json"
    result = run(applied, "apply", env={"RECONCILER_TEST_FAULT": "rename:server-profiles:ENOSPC"})
    assert result.returncode == 1
    assert f"{target}: no space left on the device" in result.stderr
    assert "?:" not in result.stderr


def test_suspend_with_var_dir_a_file_is_a_clear_error(applied: Sandbox, tmp_path: Path) -> None:
    afile = tmp_path / "var-file"
    afile.write_text("x")
    result = run(applied, "suspend", env={"RECONCILER_VAR_DIR": str(afile)})
    no_traceback(result)
    assert result.returncode != 0
    assert str(afile) in result.stderr


def test_settings_errors_without_a_file_do_not_say_none(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["RECONCILER_METRICS_ADDRESS"] = "nonsense"
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "--state", str(tmp_path), "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        cwd=REPO,
        check=False,
    )
    no_traceback(result)
    assert "None" not in result.stderr
    assert "metrics_address.console" not in result.stderr
    assert "metrics_address" in result.stderr


def test_audit_verify_after_retention_deleted_the_oldest_file(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.audit.files import audit_files
    from reconciler.audit.writer import AuditLog

    path = sandbox.var / "audit.jsonl"
    sandbox.var.mkdir(parents=True, exist_ok=True)
    with AuditLog(path) as log:
        for step in range(3):
            for n in range(4):
                log.append("warning", None, reason=f"step {step} record {n}")
            if step < 2:
                path.rename(path.with_name(f"audit.jsonl.{2 - step}"))  # logrotate's rename
    files = audit_files(path)
    assert len(files) == 3
    code, out, err = run_cli(sandbox, monkeypatch, capsys, "audit", "verify")
    assert code == 0, err
    assert "from seq 1, the log's beginning" in out
    files[0].unlink()  # logrotate's retention: the oldest rotated file goes first
    code, out, err = run_cli(sandbox, monkeypatch, capsys, "audit", "verify")
    assert code == 0, err
    assert "8 records in 2 file(s), from seq 5" in out
    assert "not the log's beginning" in out
    lines = files[1].read_text().splitlines()
    lines[1] = lines[1].replace("record 1", "record X")
    files[1].write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(sandbox, monkeypatch, capsys, "audit", "verify")
    assert code == 1
    assert "hash mismatch" in err
