"""No private key material in any output, log, audit record or bookkeeping file, ever."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bench.leaks import Forms, first_leak, key_forms, secret_forms
from reconciler.support import devpki
from reconciler.support.devpki import KeyType
from tests.helpers.net import free_port
from tests.helpers.passes import secret_haystacks
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki

FAILING_HOOK = """
[[hooks]]
name = "fails-on-demand"
on = ["identity"]
run = ["{script}"]
"""


def _key_lines(pki: Pki) -> list[str]:
    lines = []
    for leaf in (pki.leaf, pki.leaf2):
        lines += [ln for ln in leaf.key_pem.decode().splitlines() if "-----" not in ln]
    return lines


def test_no_key_line_anywhere_after_every_command_and_a_failing_pass(
    sandbox: Sandbox, pki: Pki, tmp_path: Path
) -> None:
    # Profiles that point at closed loopback ports: `probe` must not leave this machine.
    for name in ("core", "relay"):
        sandbox.state.remove(f"profiles/{name}.toml")
    sandbox.state.profile("local", f'url = "smtps://127.0.0.1:{free_port()}"\n')
    switch = tmp_path / "fail"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\ncat "$RECONCILER_ROOT/data/tls.pem"\n[ ! -e "{switch}" ]\n')
    script.chmod(0o755)
    sandbox.hooks = FAILING_HOOK.format(script=script)

    outputs: list[subprocess.CompletedProcess[str]] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = sandbox.run(*args)
        outputs.append(result)
        return result

    run("validate")
    run("plan")
    run("plan", "--json")
    assert run("apply").returncode == 0
    # A failing pass: a new identity whose hook fails (and prints the key bundle to its output).
    sandbox.state.identity(pki, pki.leaf2)
    switch.touch()
    assert run("apply").returncode == 1
    switch.unlink()
    # Rejected states whose files hold key bytes where they do not belong.
    sandbox.state.write("tls/cert.pem", pki.leaf2.key_pem + pki.chain(pki.leaf2))
    sandbox.state.write("trust/oops.pem", pki.leaf.key_pem)
    sandbox.state.write("tls/key.pem", pki.leaf.key_pem)  # also mismatched now
    assert run("validate").returncode == 1
    assert run("apply").returncode == 1
    run("plan", "--json")
    for args in (
        ("status",),
        ("status", "--json"),
        ("suspend", "--reason", "sweep"),
        ("resume",),
        ("audit", "show"),
        ("audit", "show", "--json"),
        ("audit", "verify"),
        ("probe",),
        ("probe", "--json"),
        ("schema",),
    ):
        run(*args)

    haystacks = secret_haystacks(sandbox, outputs)
    assert (sandbox.var / "audit.jsonl").exists()
    assert any("hook.ran" in text for text in haystacks.values())
    for line in _key_lines(pki):
        for where, text in haystacks.items():
            assert line not in text, f"a private key line leaked into {where}"


# --- What redaction remembers: everything the state uses, however many others it saw ------------

PRINTING_HOOK = """
[[hooks]]
name = "prints-secrets"
on = ["identity", "profiles", "trust"]
run = ["{script}"]
timeout_s = 60
"""

# A hook as an operator might write one to debug: it prints the key in the forms tools print.
PRINT_KEY = """#!/bin/sh
openssl pkey -in "$RECONCILER_ROOT/data/key.pem" -text -noout
base64 "$RECONCILER_ROOT/data/key.pem"
cat "$RECONCILER_ROOT"/data/secrets/*.password 2>/dev/null
{tail}
"""


def _print_hook(box: Sandbox, tail: str = "exit 0") -> None:
    script = box.base / "print-secrets.sh"
    script.write_text(PRINT_KEY.format(tail=tail))
    script.chmod(0o755)
    box.hooks = PRINTING_HOOK.format(script=script)


def _comment_keys(count: int, key_type: str) -> str:
    """`count` private keys as TOML comment lines: valid profile text that carries key bytes."""
    lines = []
    for _ in range(count):
        key = ed25519.Ed25519PrivateKey.generate() if key_type == "ed25519" else None
        pem = (key or devpki.new_key(cast(KeyType, key_type))).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        lines += [f"# {line}" for line in pem.decode().splitlines()]
    return "\n".join(lines) + "\n"


def _outputs(box: Sandbox, results: list[subprocess.CompletedProcess[str]]) -> list[str]:
    texts = [r.stdout + r.stderr for r in results]
    return [*texts, (box.var / "audit.jsonl").read_text("utf-8")]


def _assert_nothing_shows(texts: list[str], forms: list[Forms]) -> None:
    for text in texts:
        assert first_leak(text, forms) is None, first_leak(text, forms)


@pytest.mark.parametrize(
    ("identity_type", "comment_keys", "key_type", "profiles"),
    [
        ("rsa2048", 6, "rsa2048", 1),  # the issue's reproduction: six RSA keys in one profile
        ("ec256", 40, "ec256", 8),  # more keys than are kept in passing, over several profiles
        ("ec384", 40, "ed25519", 40),  # one short key in each of many profiles
    ],
    ids=["six-rsa", "forty-ec", "ed25519-per-profile"],
)
def test_the_identity_key_stays_redacted_however_many_other_keys_the_state_holds(
    sandbox: Sandbox,
    pki: Pki,
    identity_type: KeyType,
    comment_keys: int,
    key_type: str,
    profiles: int,
) -> None:
    leaf = devpki.issue(pki.intermediate, "gateway.test", key_type=identity_type)
    sandbox.state.identity(pki, leaf)
    per_profile = comment_keys // profiles
    for number in range(profiles):
        sandbox.state.profile(
            f"pasted-{number}",
            _comment_keys(per_profile, key_type) + 'url = "https://core.example.com:8443"\n',
        )
    _print_hook(sandbox)
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    assert "hook.ran" in (sandbox.var / "audit.jsonl").read_text()
    _assert_nothing_shows(_outputs(sandbox, [result]), [key_forms(leaf.key_pem, "identity")])


def test_seventy_profiles_with_passwords_print_none_of_them(sandbox: Sandbox) -> None:
    keys = sandbox.base / "keys"
    keys.mkdir()
    sandbox.extra += f'key_dirs = ["{keys}"]\n'
    passwords = []
    for number in range(70):
        value = f"pw{number:02d}-{secrets.token_hex(10)}".encode()
        passwords.append(value)
        (keys / f"relay-{number}").write_bytes(value + b"\n")
        sandbox.state.profile(
            f"relay-{number:02d}",
            f'url = "smtps://relay{number}.example.com"\npassword_file = "{keys}/relay-{number}"\n',
        )
    _print_hook(sandbox)
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    forms = [secret_forms(value, f"password {i}") for i, value in enumerate(passwords)]
    _assert_nothing_shows(_outputs(sandbox, [result]), forms)


def test_the_key_a_rollback_puts_back_stays_redacted_in_its_hooks(
    sandbox: Sandbox, pki: Pki
) -> None:
    """The previous key is no longer in the desired state: it is remembered as the pass's
    backup, what the rollback hooks see, whatever other keys the failed push carried."""
    _print_hook(sandbox, tail='[ "$RECONCILER_PHASE" = rollback ]')
    first = sandbox.run("apply")  # the first pass's hook fails too: nothing to roll back to
    sandbox.hooks = ""
    assert sandbox.run("apply").returncode == 0
    _print_hook(sandbox, tail='[ "$RECONCILER_PHASE" = rollback ]')
    sandbox.state.identity(pki, pki.leaf2)
    sandbox.state.profile(
        "pasted", _comment_keys(40, "ec256") + 'url = "https://core.example.com:8443"\n'
    )
    failed = sandbox.run("apply")
    assert failed.returncode == 1
    audit = (sandbox.var / "audit.jsonl").read_text()
    assert '"phase":"rollback"' in audit
    forms = [key_forms(pki.leaf.key_pem, "old key"), key_forms(pki.leaf2.key_pem, "new key")]
    _assert_nothing_shows(_outputs(sandbox, [first, failed]), forms)


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe-binary-secret-\x80\x81",
        b"caf\xe9-latin-1-passw0rd",
        b"\xed\xa0\x80-encoded-surrogate-\x1b[31m",
        b"\xa9\xa9-after-a-lead-byte",
    ],
    ids=["binary", "latin-1", "surrogate-and-escape", "continuation-bytes"],
)
def test_a_credential_that_is_not_utf8_is_redacted_in_hook_output(
    sandbox: Sandbox, value: bytes
) -> None:
    keys = sandbox.base / "keys"
    keys.mkdir()
    (keys / "password").write_bytes(value)
    sandbox.extra += f'key_dirs = ["{keys}"]\n'
    sandbox.state.profile(
        "relay", f'url = "smtps://relay.example.com"\npassword_file = "{keys}/password"\n'
    )
    script = sandbox.base / "print.sh"
    # A lead byte right before the value: decoded as one text, it would merge with the value.
    script.write_text(
        '#!/bin/sh\nprintf "\\303"\ncat "$RECONCILER_ROOT/data/secrets/relay.password"\n'
        'echo; cat "$RECONCILER_ROOT/data/secrets/relay.password"\n'
    )
    script.chmod(0o755)
    sandbox.hooks = PRINTING_HOOK.format(script=script)
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    audit = (sandbox.var / "audit.jsonl").read_bytes()
    assert b"[secret redacted]" in audit
    forms = [secret_forms(value)]
    for text in (audit, (result.stdout + result.stderr).encode("utf-8", "surrogateescape")):
        assert first_leak(text, forms) is None, first_leak(text, forms)
