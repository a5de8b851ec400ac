"""`plan --diff`: what would change, line by line; certificates as subjects and fingerprints, keys
as digests only."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography import x509

from reconciler.core.pem import parse_pem
from reconciler.support import devpki
from tests.helpers.cli import run_cli
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki


def _key_material(key_pem: bytes) -> list[str]:
    """What must never be printed: the key's PEM body lines and its DER in base64."""
    body = [line for line in key_pem.decode().splitlines() if "-----" not in line]
    der = parse_pem(key_pem)[0].der
    return [*body, base64.b64encode(der).decode()]


def _diff_of(out: str, path: str) -> list[str]:
    """The lines of the diff of `path` in `plan --diff` text output."""
    lines = out.splitlines()
    start = lines.index(f"--- a{path}")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.startswith("--- a/"):
            break
        block.append(line)
    return block


def test_first_plan_shows_every_new_target(
    sandbox: Sandbox, pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(sandbox, monkeypatch, capsys, "plan", "--diff")
    assert code == 2, err

    ssl_conf = _diff_of(out, f"{sandbox.root}/nginx/ssl.conf")
    assert ssl_conf[1] == f"+++ b{sandbox.root}/nginx/ssl.conf"
    assert f"+ssl_certificate {sandbox.root}/data/cert.pem;" in "\n".join(ssl_conf).replace('"', "")

    trust = _diff_of(out, f"{sandbox.trust_dir}/reconciler-partner-ca.crt")
    fingerprint = hashlib.sha256(parse_pem(pki.other_ca.cert_pem)[0].der).hexdigest()
    assert "+subject CN=Other Test CA" in trust
    assert f"+  sha256 fingerprint {fingerprint}" in trust

    key = _diff_of(out, f"{sandbox.root}/data/key.pem")
    digest = hashlib.sha256(pki.leaf.key_pem).hexdigest()
    assert key[2:] == ["@@ -0,0 +1 @@", f"+sha256 {digest} (key material: content not shown)"]
    for secret in _key_material(pki.leaf.key_pem):
        assert secret not in out + err


def test_diff_after_apply_shows_only_what_the_commit_changes(
    sandbox: Sandbox, pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    state = sandbox.state
    text = (state.path / "gateway.toml").read_text()
    state.write("gateway.toml", text.replace('"intermediate"', '"modern"'))
    state.remove("trust/partner-ca.pem")
    new_leaf = devpki.issue(pki.intermediate, "gateway.test")
    state.identity(pki, new_leaf)

    code, out, err = run_cli(sandbox, monkeypatch, capsys, "plan", "--diff")
    assert code == 2, err

    ssl_conf = _diff_of(out, f"{sandbox.root}/nginx/ssl.conf")
    removed = [line for line in ssl_conf if line.startswith("-") and not line.startswith("---")]
    added = [line for line in ssl_conf if line.startswith("+") and not line.startswith("+++")]
    assert any("TLSv1.2" in line for line in removed), ssl_conf
    assert not any("TLSv1.2" in line for line in added), ssl_conf
    assert len(removed) + len(added) < len(ssl_conf)  # context lines: only changed lines marked

    trust = _diff_of(out, f"{sandbox.trust_dir}/reconciler-partner-ca.crt")
    assert "-subject CN=Other Test CA" in trust
    assert not any(line.startswith("+") and not line.startswith("+++") for line in trust)

    cert = _diff_of(out, f"{sandbox.root}/data/cert.pem")
    serial = f"{x509.load_pem_x509_certificate(new_leaf.cert_pem).serial_number:x}"
    assert f"+  serial {serial}" in cert

    key = _diff_of(out, f"{sandbox.root}/data/key.pem")
    old, new = (hashlib.sha256(k.key_pem).hexdigest() for k in (pki.leaf, new_leaf))
    assert f"-sha256 {old} (key material: content not shown)" in key
    assert f"+sha256 {new} (key material: content not shown)" in key
    for secret in _key_material(pki.leaf.key_pem) + _key_material(new_leaf.key_pem):
        assert secret not in out + err


def test_plan_json_carries_the_diff(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    sandbox.state.profile("backup", 'url = "smtps://backup.example.com"\n')
    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "plan", "--json", "--diff")
    assert code == 2
    changes = json.loads(out)["changes"]
    assert [c["path"] for c in changes] == [f"{sandbox.root}/data/server-profiles.json"]
    diff = changes[0]["diff"]
    assert diff.startswith(f"--- a{sandbox.root}/data/server-profiles.json\n")
    assert any(line.startswith("+") and "backup.example.com" in line for line in diff.splitlines())

    code, out, _ = run_cli(sandbox, monkeypatch, capsys, "plan", "--json")
    assert "diff" not in json.loads(out)["changes"][0]


def test_a_key_planted_in_a_public_target_is_shown_as_a_digest(
    sandbox: Sandbox, pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone pasted a key into ssl.conf: the diff removes it, and shows only its digest."""
    assert run_cli(sandbox, monkeypatch, capsys, "apply")[0] == 0
    conf = sandbox.root / "nginx/ssl.conf"
    conf.write_bytes(conf.read_bytes() + pki.leaf2.key_pem)
    code, out, err = run_cli(sandbox, monkeypatch, capsys, "plan", "--diff")
    assert code == 2, err
    diff = _diff_of(out, str(conf))
    assert any(line.startswith("-sha256 ") for line in diff), diff
    for secret in _key_material(pki.leaf2.key_pem):
        assert secret not in out + err
