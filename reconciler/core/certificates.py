"""Certificates from PEM bytes: decoding, their CertInfo, who signed them, their dates."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from reconciler.core.collect import Findings
from reconciler.core.desired import CertInfo
from reconciler.core.memo import Memo
from reconciler.core.pem import CERT_LABELS, PemBlock, PemError, encode_pem, parse_pem
from reconciler.core.secret import is_key_label
from reconciler.core.timefmt import rfc3339

_X509_ERRORS = (
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
# Crypto failures that mean "this input is not what it claims"; anything else is a bug and raises.
CRYPTO_ERRORS = (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm)
# Sized for the largest trust stores the benchmarks exercise plus the identity chain, with room
# for renewals; an entry is a small CertInfo, kept by its own fingerprint.
CACHE_SIZE = 16384
_infos: Memo[str, CertInfo] = Memo(CACHE_SIZE)


def cert_info(der: bytes) -> CertInfo:
    """Describe a certificate given as DER.

    Raises ValueError when the bytes are not a certificate cryptography can read. Results are
    kept by the DER's SHA-256 (the certificate's fingerprint): trust stores are large and change
    rarely between passes.
    """
    der = bytes(der)
    fingerprint = hashlib.sha256(der).hexdigest()
    found = _infos.get(fingerprint)
    if found is None:
        found = _infos.put(fingerprint, _cert_info(der, fingerprint))
    return found


def _cert_info(der: bytes, fingerprint: str) -> CertInfo:
    if not _serial_is_positive(der):
        # cryptography only warns about these (an exception "in a future release"); rejecting
        # them now keeps an upgrade from turning an accepted state into a rejected one.
        raise ValueError("the serial number is zero or negative, which RFC 5280 forbids")
    try:
        cert = x509.load_der_x509_certificate(der)
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
            is_ca = constraints.value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        return CertInfo(
            subject=cert.subject.rfc4514_string(),
            # Many certificates share an issuer: one string for all of them.
            issuer=sys.intern(cert.issuer.rfc4514_string()),
            serial=f"{cert.serial_number:x}",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sha256_fingerprint=fingerprint,  # the same string as the memo's key
            is_ca=is_ca,
            self_signed=signed_by(cert, cert),
        )
    except _X509_ERRORS as exc:
        # cryptography's own x509 exceptions are not ValueErrors; callers need only one type.
        raise ValueError(str(exc) or type(exc).__name__) from exc


def _serial_is_positive(der: bytes) -> bool:
    """False only when the DER's serialNumber is readable and zero or negative.

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber
    INTEGER, ... } ... }. Anything this walk cannot follow is left to cryptography to reject.
    """
    try:
        pos, _ = _der_header(der, 0, 0x30)
        pos, _ = _der_header(der, pos, 0x30)
        if der[pos] == 0xA0:
            start, length = _der_header(der, pos, 0xA0)
            pos = start + length
        start, length = _der_header(der, pos, 0x02)
    except (IndexError, ValueError):
        return True
    serial = der[start : start + length]
    if not serial:
        return True
    return not (serial[0] & 0x80 or not any(serial))


def _der_header(der: bytes, pos: int, tag: int) -> tuple[int, int]:
    """(content offset, content length) of the DER element at `pos`, which must have `tag`."""
    if der[pos] != tag:
        raise ValueError("unexpected tag")
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2, first
    count = first & 0x7F
    if not 1 <= count <= 4:
        raise ValueError("unsupported length")
    length = int.from_bytes(der[pos + 2 : pos + 2 + count], "big")
    return pos + 2 + count, length


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer` names and signed `cert` (name match and signature check)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except CRYPTO_ERRORS:
        return False
    return True


@dataclass(frozen=True, slots=True)
class DecodedCert:
    """One decoded certificate of a file: position (1-based), DER, info, canonical PEM."""

    position: int
    der: bytes
    info: CertInfo
    pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        # Loaded on demand: only the identity's few certificates need the object, and trust
        # files, however many certificates they hold, are served by the cached CertInfo alone.
        return x509.load_der_x509_certificate(self.der)

    @property
    def name(self) -> str:
        return cert_name(self.position, self.info)


def cert_name(position: int, info: CertInfo) -> str:
    return f"certificate {position} ({info.subject or 'empty subject'})"


def read_certs(
    data: bytes, file: str, field: str | None, out: Findings
) -> list[DecodedCert] | None:
    """Decode every certificate block; None (with an error recorded) when any cannot be read."""
    try:
        blocks = parse_pem(data)
    except PemError as exc:
        out.error(file, field, f"not valid PEM: {exc}", rule="pem-invalid")
        return None
    if not blocks:
        hint = (
            " (it looks like binary DER: convert it with `openssl x509 -inform der`)"
            if data[:1] == b"\x30"
            else ""
        )
        out.error(
            file,
            field,
            f"not PEM: no -----BEGIN CERTIFICATE----- line found{hint}",
            rule="pem-missing",
        )
        return None
    cert_blocks = [b for b in blocks if b.label in CERT_LABELS]
    others = sorted({b.label for b in blocks if b.label not in CERT_LABELS})
    if any(is_key_label(label) for label in others):
        out.warning(
            file,
            field,
            "holds a private key block, which is ignored; keep private keys out of "
            "certificate files (this file is readable by everyone who can read the state)",
            rule="cert-holds-key",
        )
    if not cert_blocks:
        found = ", ".join(others)
        out.error(
            file, field, f"no CERTIFICATE block (found only: {found})", rule="pem-no-certificate"
        )
        return None
    certs: list[DecodedCert] = []
    ok = True
    for position, block in enumerate(cert_blocks, start=1):
        decoded = _decode_cert(block, position)
        if isinstance(decoded, str):
            out.error(file, field, decoded, rule="cert-invalid")
            ok = False
        else:
            certs.append(decoded)
    return certs if ok else None


def _decode_cert(block: PemBlock, position: int) -> DecodedCert | str:
    """The decoded certificate, or the reason it cannot be read."""
    where = f"certificate {position} (line {block.line})"
    try:
        info = cert_info(block.der)
    except CRYPTO_ERRORS as exc:
        return f"{where} is not a valid X.509 certificate: {exc}"
    return DecodedCert(position, block.der, info, encode_pem("CERTIFICATE", block.der))


def as_utc(now: datetime) -> datetime:
    # A naive `now` is taken as UTC rather than rejected: comparing naive and aware raises.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def validity_problem(info: CertInfo, now: datetime) -> str | None:
    if now < info.not_before:
        return f"not valid yet: valid from {rfc3339(info.not_before)}"
    if now > info.not_after:
        return f"expired on {rfc3339(info.not_after)}"
    return None
