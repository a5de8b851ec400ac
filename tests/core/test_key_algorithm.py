"""A private key's algorithm is read from its label and DER, before cryptography loads it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from reconciler.core import der
from reconciler.core.key_algorithm import dsa_private_value, key_algorithm
from reconciler.core.pem import parse_pem
from reconciler.support.devpki import new_key

KEYS: dict[str, tuple[Callable[[], PrivateKeyTypes], str]] = {
    "rsa": (lambda: rsa.generate_private_key(65537, 2048), "RSA"),
    "ec": (lambda: ec.generate_private_key(ec.SECP384R1()), "EC"),
    "dsa": (lambda: new_key("dsa2048"), "DSA"),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, "Ed25519"),
    "ed448": (ed448.Ed448PrivateKey.generate, "Ed448"),
    "x25519": (x25519.X25519PrivateKey.generate, "X25519"),
    "x448": (x448.X448PrivateKey.generate, "X448"),
}


def _block(key: PrivateKeyTypes, fmt: serialization.PrivateFormat) -> tuple[str, bytes]:
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    (block,) = parse_pem(pem)
    return block.label, block.der


@pytest.mark.parametrize("name", list(KEYS), ids=list(KEYS))
def test_pkcs8_keys_are_named_by_their_algorithm_identifier(name: str) -> None:
    make, expected = KEYS[name]
    label, key_der = _block(make(), serialization.PrivateFormat.PKCS8)
    assert label == "PRIVATE KEY"
    assert key_algorithm(label, key_der) == expected


@pytest.mark.parametrize("name", ["rsa", "ec", "dsa"])
def test_traditional_keys_are_named_by_their_label(name: str) -> None:
    make, expected = KEYS[name]
    label, key_der = _block(make(), serialization.PrivateFormat.TraditionalOpenSSL)
    assert label == f"{expected} PRIVATE KEY"
    assert key_algorithm(label, key_der) == expected


def test_an_unknown_algorithm_is_named_by_its_oid() -> None:
    oid = bytes([0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37])  # 1.3.6.1.4.1.311
    algorithm = der.encode(der.SEQUENCE, der.encode(der.OBJECT_IDENTIFIER, oid), constructed=True)
    info = der.encode(
        der.SEQUENCE,
        der.encode(der.INTEGER, b"\x00") + algorithm + der.encode(der.OCTET_STRING, b"\x04\x00"),
        constructed=True,
    )
    assert key_algorithm("PRIVATE KEY", info) == "unknown (OID 1.3.6.1.4.1.311)"


@pytest.mark.parametrize(
    "key_der", [b"", b"\x30\x00", b"\x30\x03\x02\x01\x00", b"\x04\x02ab", b"\x30\x80\x00\x00"]
)
def test_unreadable_pkcs8_is_none_not_an_exception(key_der: bytes) -> None:
    assert key_algorithm("PRIVATE KEY", key_der) is None
    assert dsa_private_value("PRIVATE KEY", key_der) is None
    assert dsa_private_value("DSA PRIVATE KEY", key_der) is None


@pytest.mark.parametrize("name", ["rsa", "ec", "ed25519"])
def test_only_a_dsa_key_has_a_dsa_private_value(name: str) -> None:
    label, key_der = _block(KEYS[name][0](), serialization.PrivateFormat.PKCS8)
    assert dsa_private_value(label, key_der) is None
