"""The output boundary: escaping is deterministic, keys are redacted in every form tools print."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.support import redact
from reconciler.support.devpki import new_key
from reconciler.support.redact import REDACTED, remember_key, remember_secret, scrub


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
