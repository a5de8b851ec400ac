"""A private key's algorithm, read from its PEM label and DER before any library loads it.

The identity's key is accepted by type, positively: RSA and EC are loaded (and their sizes and
curves checked); everything else is named and refused without ever being handed to a parser that
would warn about it or, in a later release, no longer know it (cryptography deprecates DSA).
The same reading gives the redaction the secret number of a DSA key without loading it.
"""

from __future__ import annotations

from reconciler.core import der

__all__ = ["RSA", "EC", "KeyAlgorithm", "dsa_private_value", "key_algorithm"]

RSA = "RSA"
EC = "EC"
DSA = "DSA"

#: The names of the algorithms a PKCS#8 AlgorithmIdentifier may carry (RFC 8017, 5480, 3279,
#: 8410 and the GOST and SM2 registrations OpenSSL knows).
_OIDS = {
    "1.2.840.113549.1.1.1": RSA,
    "1.2.840.113549.1.1.10": "RSA-PSS",
    "1.2.840.10045.2.1": EC,
    "1.2.840.10040.4.1": DSA,
    "1.2.840.10046.2.1": "DH",
    "1.2.840.113549.1.3.1": "DH",
    "1.3.101.110": "X25519",
    "1.3.101.111": "X448",
    "1.3.101.112": "Ed25519",
    "1.3.101.113": "Ed448",
    "1.2.156.10197.1.301": "SM2",
    "1.2.643.7.1.1.1.1": "GOST R 34.10-2012",
    "1.2.643.7.1.1.1.2": "GOST R 34.10-2012",
}

#: The traditional (OpenSSL "legacy") labels name their algorithm.
_LABELS = {"RSA PRIVATE KEY": RSA, "EC PRIVATE KEY": EC, "DSA PRIVATE KEY": DSA}

KeyAlgorithm = str


def key_algorithm(label: str, key_der: bytes) -> KeyAlgorithm | None:
    """The algorithm's name ("RSA", "EC", "DSA", "Ed25519", ..., or "unknown (OID x.y.z)"); None
    when a PKCS#8 "PRIVATE KEY" block cannot be read as far as its AlgorithmIdentifier (the
    caller's "unreadable key" case). Raises nothing."""
    if label in _LABELS:
        return _LABELS[label]
    try:
        oid = _pkcs8_algorithm(bytes(key_der))
    except ValueError:
        return None
    return _OIDS.get(oid, f"unknown (OID {oid})")


def dsa_private_value(label: str, key_der: bytes) -> int | None:
    """The private value x of a DSA key (traditional or PKCS#8), None for anything else."""
    data = bytes(key_der)
    try:
        if label == "DSA PRIVATE KEY":
            # DSAPrivateKey ::= SEQUENCE { version, p, q, g, y, x }
            outer = der.read(data, 0, len(data))
            numbers = list(der.elements(data, outer.body, outer.end))
            return _integer(data, numbers[5]) if len(numbers) >= 6 else None
        if label == "PRIVATE KEY" and _pkcs8_algorithm(data) == _key_oid(DSA):
            # PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING { x } }
            outer = der.read(data, 0, len(data))
            fields = list(der.elements(data, outer.body, outer.end))
            octets = fields[2]
            der.expect(octets, der.OCTET_STRING, "privateKey", constructed=False)
            return _integer(data, der.read(data, octets.body, octets.end))
    except (ValueError, IndexError):
        return None
    return None


def _pkcs8_algorithm(data: bytes) -> str:
    outer = der.read(data, 0, len(data))
    der.expect(outer, der.SEQUENCE, "PrivateKeyInfo")
    fields = der.elements(data, outer.body, outer.end)
    der.expect(der.next_element(fields, "version"), der.INTEGER, "version", constructed=False)
    algorithm = der.next_element(fields, "privateKeyAlgorithm")
    der.expect(algorithm, der.SEQUENCE, "privateKeyAlgorithm")
    oid = der.next_element(der.elements(data, algorithm.body, algorithm.end), "algorithm")
    der.expect(oid, der.OBJECT_IDENTIFIER, "algorithm", constructed=False)
    return der.oid_text(data[oid.body : oid.end])


def _key_oid(name: str) -> str:
    return next(oid for oid, known in _OIDS.items() if known == name)


def _integer(data: bytes, element: der.Tlv) -> int:
    der.expect(element, der.INTEGER, "INTEGER", constructed=False)
    return int.from_bytes(data[element.body : element.end], "big", signed=True)
