"""What OpenSSL's PEM reader finds in a file of a CApath directory, for its hash links.

`openssl rehash` reads each file with `PEM_X509_INFO_read`, which groups the PEM blocks it knows
into X509_INFO items: a certificate, a CRL and a private key read in a row make one item, and a
second of any of them starts the next. A file is linked only when it makes exactly one item with
a certificate or a CRL, which must decode. This reads files the same way, from bytes.
"""

from __future__ import annotations

import binascii
import hashlib
import re

from reconciler.core import der
from reconciler.core.subject_hash import certificate_subject, crl_issuer, name_hash

__all__ = ["CERT", "CRL", "FILE_LIMIT", "KEY_ALONE", "SKIPPED", "Held", "held_by", "sha1_of"]

CERT, CRL = 0, 1
"""The two kinds of link: to a certificate (`HASH.N`) and to a CRL (`HASH.rN`)."""
FILE_LIMIT = 64 << 20
"""Files read for their certificates: a bundle of every CA is far under."""

Held = tuple[int, ...]
"""What a file needs: (kind, hash) of the one bucket it is linked in; or, for a managed file
holding several certificates, (-1, hash, hash, ...): a link per certificate; () for nothing."""

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([^\r\n-][^\r\n]*?)-----[ \t]*\r?\n(.*?)\r?\n-----END \1-----", re.DOTALL
)


SKIPPED = "it does not contain exactly one certificate or CRL"
"""The tool's warning for a file it skips."""
KEY_ALONE = "it holds a private key and no certificate or CRL"
"""What makes the tool fail (exit 1) on a file."""


def held_by(data: bytes, *, managed: bool) -> tuple[Held, str | None]:
    """What a file holding `data` needs, and why it needs nothing where the tool says so:
    SKIPPED (a warning) or KEY_ALONE (the tool fails). A `managed` file was validated when it
    was rendered: its blocks are not decoded again."""
    infos = _pem_infos(data, checked=not managed)
    if infos is None:
        return (), None  # a block OpenSSL cannot decode: the tool skips the file without a word
    try:
        if len(infos) != 1:
            certificates = [cert for cert, _crl in infos if cert is not None]
            if managed and len(infos) > 1 and len(certificates) == len(infos):
                return (-1, *(_subject_hash(cert) for cert in certificates)), None
            return (), SKIPPED
        cert, crl = infos[0]
        if cert is not None:
            return (CERT, _subject_hash(cert)), None
        if crl is not None:
            return (CRL, name_hash(crl_issuer(crl))), None
    except ValueError:
        return (), None  # a name OpenSSL could not load either
    return (), KEY_ALONE


def sha1_of(data: bytes, kind: int) -> bytes | None:
    """SHA-1 of the one certificate (or CRL) the file holds: what the tool tells duplicates in
    one bucket apart by; None when it holds none."""
    infos = _pem_infos(data, checked=False) or [(None, None)]
    body = infos[0][kind]
    return hashlib.sha1(body, usedforsecurity=False).digest() if body is not None else None


def _subject_hash(cert: bytes) -> int:
    return name_hash(certificate_subject(cert))


Info = tuple[bytes | None, bytes | None]
"""One X509_INFO as OpenSSL's PEM reader makes it: (certificate DER, CRL DER)."""


def _pem_infos(data: bytes, *, checked: bool) -> list[Info] | None:
    """The X509_INFO items `PEM_X509_INFO_read` makes of `data`, or None where it fails (a
    certificate or CRL it cannot decode). `checked`: decode them as OpenSSL would; a managed
    file was validated when the pass rendered it."""
    infos: list[Info] = []
    cert = crl = None
    key = False
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1).decode("latin-1")
        body = _pem_body(match.group(2))
        if label in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
            if cert is not None:
                infos.append((cert, crl))
                cert, crl, key = None, None, False
            if body is None:
                return None
            cert = _first_element(body) if label == "TRUSTED CERTIFICATE" else body
            if cert is None or (checked and not _decodes(cert, CERT)):
                return None
        elif label == "X509 CRL":
            if crl is not None:
                infos.append((cert, crl))
                cert, crl, key = None, None, False
            if body is None or (checked and not _decodes(body, CRL)):
                return None
            crl = body
        elif label.endswith("PRIVATE KEY"):
            if key:
                infos.append((cert, crl))
                cert, crl = None, None
            key = True
    if cert is not None or crl is not None or key:
        infos.append((cert, crl))
    return infos


def _pem_body(block: bytes) -> bytes | None:
    """The DER of a PEM block's body (RFC 1421 headers skipped), None when it is not base64."""
    lines = block.split(b"\n")
    if lines and b":" in lines[0]:
        while lines and lines[0].strip():
            lines.pop(0)
    try:
        return binascii.a2b_base64(b"".join(line.strip() for line in lines), strict_mode=True)
    except binascii.Error:
        return None


def _first_element(body: bytes) -> bytes | None:
    """A TRUSTED CERTIFICATE's certificate: the first DER element (its trust settings follow)."""
    try:
        element = der.read(body, 0, len(body))
    except ValueError:
        return None
    return body[element.start : element.end]


def _decodes(data: bytes, kind: int) -> bool:
    """Whether the DER decodes as a certificate (a CRL), as OpenSSL's reader requires."""
    from cryptography import x509

    try:
        if kind == CERT:
            x509.load_der_x509_certificate(data)
            certificate_subject(data)
        else:
            x509.load_der_x509_crl(data)
            crl_issuer(data)
    except ValueError:
        return False
    return True
