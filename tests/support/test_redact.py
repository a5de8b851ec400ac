"""The output boundary: escaping is deterministic, keys are redacted in every form tools print."""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.leaks import first_leak, secret_forms
from reconciler.core.secret import KEY_MARKER
from reconciler.support import redact, remembered
from reconciler.support.devpki import new_key
from reconciler.support.redact import (
    REDACTED,
    SECRET_REDACTED,
    remember_key,
    remember_secret,
    scrub,
)
from reconciler.support.remembered import RECENT_LIMIT


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    redact.forget_all()
    yield
    redact.forget_all()


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(params=["rsa", "ec"])
def key_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(65537, 2048) if request.param == "rsa" else new_key("ec256")
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    pem = _pem(key)
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    return path, pem


def _secret_hex(pem: bytes) -> list[str]:
    key = serialization.load_pem_private_key(pem, None)
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        return [format(v, "x") for v in (n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp)]
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return [format(key.private_numbers().private_value, "x")]


def _leaks(text: str, pem: bytes) -> list[str]:
    """Pieces of the key (16 hex digits, a base64 body line) still visible in `text`."""
    flat = re.sub(r"[:\s]", "", text).lower()
    found = [
        value[i : i + 16]
        for value in _secret_hex(pem)
        for i in range(0, len(value) - 16, 2)
        if value[i : i + 16] in flat
    ]
    body = [line for line in pem.decode().splitlines() if "-----" not in line and len(line) > 16]
    return found + [line for line in body if line in text]


def _tool(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_openssl_text_output_loses_every_private_number(key_file: tuple[Path, bytes]) -> None:
    path, pem = key_file
    printed = _tool("openssl", "pkey", "-in", str(path), "-text", "-noout")
    assert _leaks(printed, pem)  # the check itself sees the key before redaction
    remember_key(pem)
    scrubbed = scrub(printed)
    assert _leaks(scrubbed, pem) == []
    assert REDACTED in scrubbed
    assert "pub:" in scrubbed or "publicExponent" in scrubbed  # public parts stay readable


@pytest.mark.parametrize("argv", [["base64"], ["base64", "-w", "0"], ["base64", "-w", "64"]])
def test_base64_of_the_key_file_is_redacted(key_file: tuple[Path, bytes], argv: list[str]) -> None:
    path, pem = key_file
    printed = _tool(*argv, str(path))
    remember_key(pem)
    scrubbed = scrub(printed)
    left = [line for line in scrubbed.replace(REDACTED, "").split() if line]
    # At most a short tail (the base64 of a final newline) stays: under 16 characters.
    assert all(len(line) < 16 for line in left), left
    assert REDACTED in scrubbed


def test_der_base64_and_lowercase_blocks_are_redacted(key_file: tuple[Path, bytes]) -> None:
    _, pem = key_file
    key = serialization.load_pem_private_key(pem, None)
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Lower-case markers are caught by their shape, before any key is remembered.
    lowered = "before\n" + pem.decode().lower() + "after"
    assert scrub(lowered) == f"before\n{REDACTED}\nafter"
    remember_key(pem)
    assert scrub("der=" + base64.b64encode(der).decode()) == "der=" + REDACTED


def test_inline_key_in_a_manifest_is_remembered() -> None:
    pem = _pem(rsa.generate_private_key(65537, 2048))
    manifest = b'[identity]\nkey = """' + pem + b'"""\n'
    remember_key(manifest)
    line = pem.decode().splitlines()[3]
    assert scrub(f"file does not exist: {line}") == f"file does not exist: {REDACTED}"


def test_secret_is_scrubbed_everywhere_stripped() -> None:
    remember_secret(b"  hunter2-long-secret\n")
    assert scrub("login hunter2-long-secret ok; again:hunter2-long-secret") == (
        "login [secret redacted] ok; again:[secret redacted]"
    )


def test_escaping_is_deterministic_and_always_encodable() -> None:
    name = b"notes-\xff\x1b[2J\x00.txt".decode("utf-8", "surrogateescape")
    assert scrub(name) == "notes-\\xff\\x1b[2J\\x00.txt"
    assert scrub("line one\n\ttabbed") == "line one\n\ttabbed"
    assert scrub("\u0085\ud800") == "\\x85\\ud800"


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_scrub_never_raises_and_is_stable(text: str) -> None:
    once = scrub(text)
    once.encode("utf-8")  # always writable
    assert scrub(text) == once
    assert scrub(once) == once  # escaped text needs no more escaping


@pytest.mark.parametrize(
    "key_format",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
    ids=["pkcs8", "traditional"],
)
def test_a_dsa_keys_private_value_is_redacted_without_loading_it(
    tmp_path: Path, key_format: serialization.PrivateFormat
) -> None:
    """cryptography deprecates DSA: the redaction reads the private value from the DER itself
    (a warning pointing at our code would fail this test). openssl is the oracle for x."""
    key = new_key("dsa2048")
    pem = key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())
    path = tmp_path / "dsa.pem"
    path.write_bytes(pem)
    printed = _tool("openssl", "pkey", "-in", str(path), "-text", "-noout")
    private = printed.split("priv:", 1)[1].split("pub:", 1)[0]
    x = re.sub(r"[:\s]", "", private).lstrip("0")
    assert len(x) > 32
    remember_key(pem)
    scrubbed = re.sub(r"[:\s]", "", scrub(printed))
    assert x[:32] not in scrubbed
    assert x[-32:] not in scrubbed
    assert "pub" in scrubbed  # the public value stays readable


# --- What is remembered: every value in use, the newest others ---------------------------------


def _ec_pem() -> bytes:
    return _pem(new_key("ec256"))  # type: ignore[arg-type]


def test_values_in_use_stay_however_many_others_are_remembered(tmp_path: Path) -> None:
    pem = _pem(rsa.generate_private_key(65537, 2048))
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    redact.in_use("state:a", keys=[pem], secrets=[b"hunter2-in-use\n"])
    for _ in range(3 * RECENT_LIMIT):
        remember_key(_ec_pem())
        remember_secret(secrets.token_hex(12).encode())
    printed = _tool("openssl", "pkey", "-in", str(path), "-text", "-noout")
    assert _leaks(scrub(printed), pem) == []
    assert scrub("pw hunter2-in-use") == "pw [secret redacted]"


def test_a_value_no_longer_in_use_goes_after_the_newest_others() -> None:
    redact.in_use("state:a", secrets=[b"rotated-away-secret"])
    redact.in_use("state:a", secrets=[b"the-new-secret"])
    assert scrub("rotated-away-secret") == SECRET_REDACTED  # kept in passing for a while
    for number in range(RECENT_LIMIT):
        remember_secret(f"other-secret-{number}".encode())
    assert scrub("rotated-away-secret") == "rotated-away-secret"
    assert scrub("the-new-secret") == SECRET_REDACTED


def test_owners_pin_their_values_independently() -> None:
    redact.in_use("state:a", secrets=[b"secret-of-a"])
    redact.in_use("backups", secrets=[b"secret-of-a", b"backup-only"])
    redact.in_use("state:a", secrets=[])
    for number in range(2 * RECENT_LIMIT):
        remember_secret(f"other-secret-{number}".encode())
    assert scrub("secret-of-a backup-only") == f"{SECRET_REDACTED} {SECRET_REDACTED}"


def test_thousands_of_credentials_are_one_pattern_longest_first() -> None:
    values = [f"cred-{number:05d}-{secrets.token_hex(4)}" for number in range(3000)]
    redact.in_use("state:a", secrets=[v.encode() for v in [*values, "short", "short-and-long"]])
    assert scrub(f"a {values[0]} b {values[-1]} c") == f"a {SECRET_REDACTED} b {SECRET_REDACTED} c"
    assert scrub("short-and-long!") == SECRET_REDACTED + "!"
    matcher = remembered.current()
    assert matcher.text is not None
    assert matcher.text.pattern.count("short") == 1  # a shared prefix is written once


def test_credentials_nested_past_the_engines_limits_are_still_found() -> None:
    # Each value a prefix of the next: a trie as deep as the longest one.
    values = ["z" * length + "!" for length in range(1, 3000, 3)]
    redact.in_use("state:a", secrets=[v.encode() for v in values])
    assert scrub(f"x {values[500]} y") == f"x {SECRET_REDACTED} y"


@pytest.mark.parametrize(
    ("value", "around"),
    [(b"\xa9\xa9-secret", b"\xc2"), (b"\xff-binary", b""), (b"caf\xe9-pw", b"\xe2\x82")],
    ids=["continuation", "invalid", "latin-1"],
)
def test_process_output_loses_a_credential_by_its_bytes(value: bytes, around: bytes) -> None:
    redact.in_use("state:a", secrets=[value])
    shown = redact.scrub_output(b"x " + around + value + b" y")
    assert SECRET_REDACTED in shown
    assert first_leak(shown, [secret_forms(value)]) is None


# --- Field by field: documents, lines, what the reconciler made ----------------------------------


def test_scrubbed_text_is_not_scrubbed_again() -> None:
    once = scrub("a \x1b[2J b")
    assert isinstance(once, redact.Clean)
    assert scrub(once) is once
    assert redact.scrub_line("one\ntwo\tthree") == "one\\x0atwo\\x09three"


def test_a_document_is_scrubbed_value_by_value_and_stays_whole() -> None:
    document = {
        f"-----BEGIN {KEY_MARKER}": ["x\x1b", 1, None, True, {"k": "##[stop-commands]"}],
        "n": 2.5,
    }
    shown = redact.scrub_document(document)
    assert shown == {
        REDACTED: ["x\\x1b", 1, None, True, {"k": "#\\x23[stop-commands]"}],
        "n": 2.5,
    }


def test_made_text_is_escaped_but_not_searched() -> None:
    digest = "ab" * 32
    redact.in_use("state:a", secrets=[digest.encode()])
    assert scrub(digest) == SECRET_REDACTED
    assert redact.made(digest) == digest
    assert redact.made("/root/\x1b[2J") == "/root/\\x1b[2J"
