"""The command line: exit codes, messages naming file and reason; bad states change nothing."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli, devpki
from reconciler import reconcile as reconcile_module
from reconciler.reconcile import PassMemory, PassResult
from tests.conftest import Pki, Sandbox, StateDir

Mutation = Callable[[StateDir, Pki, Path], None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_cli(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The command line in this process (fast); `Sandbox.run` is the child-process twin."""
    box.write_config()
    monkeypatch.setenv("RECONCILER_CONFIG", str(box.config))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _gateway_replace(old: str, new: str) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        text = (state.path / "gateway.toml").read_text()
        assert old in text, old
        state.write("gateway.toml", text.replace(old, new))

    return mutate


def _write(rel: str, data: Callable[[Pki], bytes]) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        state.write(rel, data(pki))

    return mutate


def _leaf(**kwargs: object) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        leaf = devpki.issue(pki.intermediate, "gateway.test", **kwargs)  # type: ignore[arg-type]
        state.identity(pki, leaf)

    return mutate


def _symlink_out(state: StateDir, pki: Pki, tmp: Path) -> None:
    outside = tmp / "outside.pem"
    outside.write_bytes(pki.chain())
    (state.path / "tls/cert.pem").unlink()
    (state.path / "tls/cert.pem").symlink_to(outside)


def _absolute_key(state: StateDir, pki: Pki, tmp: Path) -> None:
    key = tmp / "secrets" / "key.pem"
    key.parent.mkdir()
    key.write_bytes(pki.leaf.key_pem)
    _gateway_replace('key = "tls/key.pem"', f'key = "{key}"')(state, pki, tmp)


def _no_identity(extra: str) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        state.gateway(extra)

    return mutate


def _profile(text: str, name: str = "bad") -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        state.profile(name, text)

    return mutate


def _self_signed(state: StateDir, pki: Pki, tmp: Path) -> None:
    leaf = devpki.issue(None)
    state.write("tls/cert.pem", leaf.cert_pem)
    state.write("tls/key.pem", leaf.key_pem)


def _expired_ca(pki: Pki) -> bytes:
    return devpki.make_ca("Expired CA", not_before=_now() - dt.timedelta(days=30), days=10).cert_pem


def _wrong_order(pki: Pki) -> bytes:
    return pki.intermediate.cert_pem + pki.leaf.cert_pem


def _not_pem(pki: Pki) -> bytes:
    return b"this is not a certificate\n"


def _key_only(pki: Pki) -> bytes:
    return pki.leaf.key_pem


# One case per desired-state error rule: (mutation, file named, words in the reason).
REJECTED: dict[str, tuple[Mutation, str, str]] = {
    "toml-syntax": (
        _write("gateway.toml", lambda p: b"[console\nhttps = true\n"),
        "gateway.toml",
        "TOML",
    ),
    "unknown-key": (
        _gateway_replace("https = true", "https = true\nhttp2 = true"),
        "gateway.toml",
        "console.http2",
    ),
    "wrong-type": (
        _gateway_replace("https = true", 'https = "yes"'),
        "gateway.toml",
        "console.https",
    ),
    "bad-value": (
        _gateway_replace('tls_policy = "intermediate"', 'tls_policy = "strict"'),
        "gateway.toml",
        "console.tls_policy",
    ),
    "not-utf8": (
        _write("gateway.toml", lambda p: b"[console]\nhttps = true # \xff\n"),
        "gateway.toml",
        "UTF-8",
    ),
    "over-1mib": (
        _write("trust/big.pem", lambda p: b"#" * (1024 * 1024 + 1)),
        "trust/big.pem",
        "1 MiB",
    ),
    "path-escape": (
        _gateway_replace('cert = "tls/cert.pem"', 'cert = "../outside.pem"'),
        "../outside.pem",
        "outside",
    ),
    "symlink-escape": (_symlink_out, "tls/cert.pem", "outside"),
    "absolute-key-outside-key-dirs": (_absolute_key, "gateway.toml", "key_dirs"),
    "missing-gateway": (lambda s, p, t: s.remove("gateway.toml"), "gateway.toml", "missing"),
    "cert-not-pem": (_write("tls/cert.pem", _not_pem), "tls/cert.pem", "PEM"),
    "cert-no-certificate": (_write("tls/cert.pem", _key_only), "tls/cert.pem", "no CERTIFICATE"),
    "chain-out-of-order": (_write("tls/cert.pem", _wrong_order), "tls/cert.pem", "order"),
    "key-not-pem": (_write("tls/key.pem", _not_pem), "tls/key.pem", "PEM"),
    "key-encrypted": (
        _write("tls/key.pem", lambda p: p.leaf.encrypted_key_pem()),
        "tls/key.pem",
        "encrypted",
    ),
    "key-dsa": (_leaf(key_type="dsa2048"), "tls/key.pem", "DSA"),
    "key-rsa-1024": (_leaf(key_type="rsa1024"), "tls/key.pem", "1024"),
    "key-mismatch": (_write("tls/key.pem", lambda p: p.leaf2.key_pem), "tls/key.pem", "match"),
    "leaf-expired": (
        _leaf(not_before=_now() - dt.timedelta(days=20), days=10),
        "tls/cert.pem",
        "expired",
    ),
    "leaf-not-yet-valid": (
        _leaf(not_before=_now() + dt.timedelta(days=2)),
        "tls/cert.pem",
        "not valid yet",
    ),
    "leaf-under-min-days": (_leaf(days=3), "tls/cert.pem", "min_days_valid"),
    "self-signed": (
        _self_signed,
        "tls/cert.pem",
        "self-signed",
    ),
    "https-without-identity": (
        _no_identity("[console]\nhttps = true\n"),
        "gateway.toml",
        "console.https",
    ),
    "inbound-tls-without-identity": (
        _no_identity('[smtp_inbound]\ntls = "required"\n'),
        "gateway.toml",
        "smtp_inbound.tls",
    ),
    "trust-not-pem": (_write("trust/broken.pem", _not_pem), "trust/broken.pem", "PEM"),
    "trust-expired": (_write("trust/old-ca.crt", _expired_ca), "trust/old-ca.crt", "expired"),
    "trust-bad-name": (
        _write("trust/Bad Name.pem", lambda p: p.root.cert_pem),
        "trust/Bad Name.pem",
        "must match",
    ),
    "profile-bad-scheme": (
        _profile('url = "ftp://files.example.com"\n'),
        "profiles/bad.toml",
        "scheme",
    ),
    "profile-bad-port": (
        _profile('url = "smtps://relay.example.com:70000"\n'),
        "profiles/bad.toml",
        "port",
    ),
    "profile-user-info": (
        _profile('url = "https://user:pw@core.example.com"\n'),
        "profiles/bad.toml",
        "user",
    ),
    "profile-query": (
        _profile('url = "https://core.example.com/?a=1"\n'),
        "profiles/bad.toml",
        "query",
    ),
    "profile-smtp-path": (
        _profile('url = "smtps://relay.example.com/inbox"\n'),
        "profiles/bad.toml",
        "path",
    ),
    "profile-missing-encryption": (
        _profile('url = "smtp://mx.example.com"\n'),
        "profiles/bad.toml",
        "transport_encryption",
    ),
    "profile-encryption-on-smtps": (
        _profile('url = "smtps://mx.example.com"\ntransport_encryption = "starttls-required"\n'),
        "profiles/bad.toml",
        "transport_encryption",
    ),
    "profile-unknown-key": (
        _profile('url = "smtps://mx.example.com"\ntimeout = 3\n'),
        "profiles/bad.toml",
        "unknown",
    ),
    "cleartext-with-require-tls-outbound": (
        lambda s, p, t: (
            _gateway_replace(
                'tls = "optional"', 'tls = "optional"\n\n[policy]\nrequire_tls_outbound = true'
            )(s, p, t),
            s.profile("plain", 'url = "http://core.example.com"\n'),
        ),
        "profiles/plain.toml",
        "require_tls_outbound",
    ),
}


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


WARNED: dict[str, tuple[Mutation, str, str]] = {
    "leaf-under-30-days": (_leaf(days=20), "tls/cert.pem", "fewer than 30"),
    "eku-without-client-auth": (_leaf(eku=("server",)), "tls/cert.pem", "clientAuth"),
    "trust-non-ca": (
        _write("trust/server.pem", lambda p: p.leaf2.cert_pem),
        "trust/server.pem",
        "not a CA",
    ),
    "starttls-optional": (
        _profile('url = "smtp://mx.example.com"\ntransport_encryption = "starttls-optional"\n'),
        "profiles/bad.toml",
        "clear text",
    ),
    "smtp-none": (
        _profile('url = "smtp://mx.example.com"\ntransport_encryption = "none"\n'),
        "profiles/bad.toml",
        "none",
    ),
    "http": (_profile('url = "http://core.example.com"\n'), "profiles/bad.toml", "http"),
    "smtp-starttls-over-smtps": (
        _profile('url = "smtp://mx.example.com"\ntransport_encryption = "starttls-required"\n'),
        "profiles/bad.toml",
        "smtps",
    ),
}


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
    _absolute_key(sandbox.state, pki, tmp_path)
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
    real_reconcile = reconcile_module.reconcile

    def noting(*args: Any) -> tuple[PassResult, PassMemory]:
        seen.append(gc.isenabled())
        return real_reconcile(*args)

    monkeypatch.setattr(reconcile_module, "reconcile", noting)
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

    from tests.conftest import standard_state

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
    # the directory backend's refresh ran: openssl rehash made the hash link
    assert any(p.is_symlink() for p in sandbox.trust_dir.iterdir())
    again = sandbox.run("apply")
    assert again.returncode == 0
    assert "already converged" in again.stdout


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


def test_target_directories_may_be_links(sandbox: Sandbox, tmp_path: Path) -> None:
    """ROOT/data as a link to another disk (a common install layout) is written through."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (sandbox.root / "data").rmdir()
    (sandbox.root / "data").symlink_to(elsewhere)
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "key.pem").stat().st_mode & 0o777 == 0o600
    assert sandbox.run("plan").returncode == 0


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
