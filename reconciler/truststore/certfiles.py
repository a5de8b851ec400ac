"""Reads certificates from PEM files and bundles: parsed, or as DER without parsing X.509."""

from __future__ import annotations

import binascii
import hashlib
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.support import fsio

_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)

CERT_FILE_LIMIT = 64 << 20
"""Certificate files read back (targets, trust entries): a bundle of every CA is far under."""


def certificates_in(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file; none when it cannot be read or parsed."""
    try:
        # Through the safe reader: a FIFO or device someone put at a target never hangs status.
        data = fsio.read_safe(path, CERT_FILE_LIMIT, follow=True)
        return list(x509.load_pem_x509_certificates(data)) if data else []
    except (OSError, ValueError):
        return []


def file_ders(path: Path) -> list[bytes]:
    return [cert.public_bytes(Encoding.DER) for cert in certificates_in(path)]


def pem_cert_digests(data: bytes) -> set[bytes]:
    """SHA-256 digests of the DER of every CERTIFICATE block in a PEM bundle.

    Decoding base64 without parsing X.509: a bundle of every CA is read at each trust pass.
    """
    return {hashlib.sha256(der).digest() for der in pem_cert_ders(data)}


def pem_cert_ders(data: bytes) -> list[bytes]:
    """The DER of every CERTIFICATE block in PEM data, in order, without parsing X.509."""
    ders: list[bytes] = []
    for match in _PEM_CERT_RE.finditer(data):
        try:
            ders.append(binascii.a2b_base64(match.group(1)))
        except binascii.Error:
            continue  # a damaged block holds no certificate we could have asked for
    return ders


def cert_subject(der: bytes) -> str:
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return f"unparsable certificate sha256:{hashlib.sha256(der).hexdigest()}"
