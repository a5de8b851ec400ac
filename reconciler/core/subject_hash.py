"""The directory trust store's link names: the subject hash that `openssl rehash` names links by.

A CApath directory finds a CA by `HASH.N`, where HASH is `X509_NAME_hash_ex()` of the subject
(of the issuer, for a CRL): the first four bytes (little-endian) of the SHA-1 of OpenSSL's
canonical encoding of the Name. This module computes it from DER bytes alone, so the backend can
make the links and prove them: stdlib only, no I/O, no cryptography.

The canonical encoding follows crypto/x509/x_name.c (`x509_name_canon`, `asn1_string_canon`,
`i2d_name_canon`) of OpenSSL 3.0 and is checked against `openssl x509 -subject_hash`:

- each RDN is re-encoded as a DER SET OF, its members sorted by their encodings;
- the RDNs are concatenated without the Name's outer SEQUENCE header (an empty Name hashes the
  empty string);
- a UTF8String, PrintableString, T61String (read as Latin-1), IA5String, BMPString (UCS-2) or
  UniversalString (UCS-4) value becomes a UTF8String with ASCII whitespace trimmed and collapsed
  to one space and ASCII letters lowercased; non-ASCII bytes are never touched;
- any other value OpenSSL accepts (NumericString too) is re-encoded unchanged, except that a
  BIT STRING's unused bits are cleared as OpenSSL's decoder does.

Input OpenSSL cannot load raises ValueError instead of producing a hash OpenSSL would never
look up: an attribute value of a type outside OpenSSL's `ASN1_PRINTABLE` set (VisibleString,
OCTET STRING, UTCTime...), text that is not valid in its declared encoding, or an OBJECT
IDENTIFIER with a bad encoding. BER that is not DER is refused too (indefinite lengths,
constructed strings), although OpenSSL would read some of it; non-minimal length and tag octets
are accepted because OpenSSL accepts them and they do not change the canonical encoding.
"""

from __future__ import annotations

import hashlib

from reconciler.core import der

__all__ = ["certificate_subject", "crl_issuer", "name_hash", "subject_hash"]

_UTF8_STRING = 12
_NUMERIC_STRING = 18
_PRINTABLE_STRING = 19
_T61_STRING = 20
_IA5_STRING = 22
_UNIVERSAL_STRING = 28
_BMP_STRING = 30

# The universal tags OpenSSL's decoder accepts as an attribute value: the `ASN1_PRINTABLE`
# MSTRING mask mapped through `ASN1_tag2bit()`, whose table files 7-9, 11, 13-15 and 29 under
# B_ASN1_UNKNOWN (which the mask includes). Any other tag makes the whole certificate unreadable.
_ACCEPTED_VALUE_TAGS = frozenset(
    {der.BIT_STRING, 7, 8, 9, 11, _UTF8_STRING, 13, 14, 15, der.SEQUENCE, _NUMERIC_STRING}
    | {_PRINTABLE_STRING, _T61_STRING, _IA5_STRING, _UNIVERSAL_STRING, 29, _BMP_STRING}
)

# ASN1_MASK_CANON minus VisibleString, which the mask names but the decoder never lets through.
# Every single-byte type is read as Latin-1: OpenSSL's `tag2nbyte` reads them byte for char
# without checking the type's own alphabet.
_SINGLE_BYTE_TEXT = frozenset({_PRINTABLE_STRING, _T61_STRING, _IA5_STRING})

_SURROGATES = range(0xD800, 0xE000)
_MAX_CODE_POINT = 0x10FFFF


def certificate_subject(cert_der: bytes) -> bytes:
    """The DER of the subject Name of an X.509 certificate, as encoded in the certificate.

    Only the path to the subject is checked (Certificate, tbsCertificate, the optional [0]
    version, serialNumber, signature, issuer, validity); raises ValueError when it is malformed.
    """
    data = bytes(cert_der)
    cert = der.read(data, 0, len(data))
    der.expect(cert, der.SEQUENCE, "Certificate")
    if cert.end != len(data):
        raise ValueError("trailing bytes after the Certificate")
    tbs = der.read(data, cert.body, cert.end)
    der.expect(tbs, der.SEQUENCE, "tbsCertificate")
    fields = der.elements(data, tbs.body, tbs.end)
    element = der.next_element(fields, "serialNumber")
    if element.tag_class == der.CONTEXT and element.number == 0:
        if not element.constructed:
            raise ValueError("tbsCertificate version: the [0] tag must be constructed")
        element = der.next_element(fields, "serialNumber")
    der.expect(element, der.INTEGER, "serialNumber", constructed=False)
    for field in ("signature", "issuer", "validity"):
        der.expect(der.next_element(fields, field), der.SEQUENCE, field)
    subject = der.next_element(fields, "subject")
    der.expect(subject, der.SEQUENCE, "subject")
    return data[subject.start : subject.end]


def crl_issuer(crl_der: bytes) -> bytes:
    """The DER of the issuer Name of an X.509 CRL (what `openssl rehash` names its `HASH.rN`
    links by), as encoded in the CRL; raises ValueError when the path to it is malformed."""
    data = bytes(crl_der)
    crl = der.read(data, 0, len(data))
    der.expect(crl, der.SEQUENCE, "CertificateList")
    tbs = der.read(data, crl.body, crl.end)
    der.expect(tbs, der.SEQUENCE, "tbsCertList")
    fields = der.elements(data, tbs.body, tbs.end)
    element = der.next_element(fields, "signature")
    if element.tag_class == der.UNIVERSAL and element.number == der.INTEGER:
        element = der.next_element(fields, "signature")  # the optional version
    der.expect(element, der.SEQUENCE, "signature")
    issuer = der.next_element(fields, "issuer")
    der.expect(issuer, der.SEQUENCE, "issuer")
    return data[issuer.start : issuer.end]


def name_hash(name_der: bytes) -> int:
    """OpenSSL's `X509_NAME_hash_ex()` of a DER Name (SHA-1, not the old MD5 hash).

    Raises ValueError for a Name OpenSSL could not load (see the module docstring).
    """
    digest = hashlib.sha1(_canonical_name(bytes(name_der)), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "little")


def subject_hash(cert_der: bytes) -> str:
    """What `openssl x509 -subject_hash -noout` prints: 8 lowercase hex digits."""
    return f"{name_hash(certificate_subject(cert_der)):08x}"


def _canonical_name(data: bytes) -> bytes:
    name = der.read(data, 0, len(data))
    der.expect(name, der.SEQUENCE, "Name")
    if name.end != len(data):
        raise ValueError("trailing bytes after the Name")
    rdns: list[bytes] = []
    for rdn in der.elements(data, name.body, name.end):
        der.expect(rdn, der.SET, "RelativeDistinguishedName")
        # DER orders a SET OF by the members' encodings; OpenSSL's encoder sorts the canonical
        # members, so the order in the certificate does not matter.
        members = sorted(
            _canonical_attribute(data, atv) for atv in der.elements(data, rdn.body, rdn.end)
        )
        # OpenSSL keeps a flat list of entries tagged with their RDN's index: an empty SET
        # leaves no entry behind, so it vanishes from the canonical form.
        if members:
            rdns.append(der.encode(der.SET, b"".join(members), constructed=True))
    return b"".join(rdns)


def _canonical_attribute(data: bytes, atv: der.Tlv) -> bytes:
    der.expect(atv, der.SEQUENCE, "AttributeTypeAndValue")
    parts = der.elements(data, atv.body, atv.end)
    oid = der.next_element(parts, "attribute type")
    value = der.next_element(parts, "attribute value")
    if next(parts, None) is not None:
        raise ValueError("AttributeTypeAndValue has more than a type and a value")
    der.expect(oid, der.OBJECT_IDENTIFIER, "attribute type", constructed=False)
    oid_content = data[oid.body : oid.end]
    _check_oid(oid_content)
    encoded = der.encode(der.OBJECT_IDENTIFIER, oid_content) + _canonical_value(data, value)
    return der.encode(der.SEQUENCE, encoded, constructed=True)


def _canonical_value(data: bytes, value: der.Tlv) -> bytes:
    if value.tag_class != der.UNIVERSAL or value.number not in _ACCEPTED_VALUE_TAGS:
        raise ValueError(
            f"attribute value has tag class {value.tag_class:#x} number {value.number}, "
            "which OpenSSL does not accept in a Name"
        )
    if value.number == der.SEQUENCE:
        if not value.constructed:
            raise ValueError("attribute value: a SEQUENCE must be constructed")
        # OpenSSL keeps a SEQUENCE value as its original bytes, header included.
        return data[value.start : value.end]
    if value.constructed:
        raise ValueError("attribute value: a constructed string is BER, not DER")
    content = data[value.body : value.end]
    text = _decode_text(value.number, content)
    if text is not None:
        return der.encode(_UTF8_STRING, _fold(text.encode("utf-8")))
    if value.number == der.BIT_STRING:
        content = _decoded_bit_string(content)
    return der.encode(value.number, content)


def _decode_text(number: int, content: bytes) -> str | None:
    """The text of a value OpenSSL canonicalises, or None for a type it copies unchanged."""
    if number == _UTF8_STRING:
        try:
            # Python's strict codec refuses what OpenSSL's UTF8_getc plus is_unicode_valid
            # refuse: overlong forms, surrogates, code points past U+10FFFF.
            return content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("attribute value: UTF8String is not valid UTF-8") from exc
    if number in _SINGLE_BYTE_TEXT:
        return content.decode("latin-1")
    if number == _BMP_STRING:
        return _decode_units(content, 2, "BMPString")
    if number == _UNIVERSAL_STRING:
        return _decode_units(content, 4, "UniversalString")
    return None


def _decode_units(content: bytes, width: int, type_name: str) -> str:
    # Each unit is one code point: OpenSSL reads BMPString as UCS-2, not UTF-16, so a surrogate
    # pair is two invalid code points rather than one character beyond the BMP.
    if len(content) % width:
        raise ValueError(f"attribute value: {type_name} length is not a multiple of {width}")
    points = [
        int.from_bytes(content[offset : offset + width], "big")
        for offset in range(0, len(content), width)
    ]
    if any(point in _SURROGATES or point > _MAX_CODE_POINT for point in points):
        raise ValueError(f"attribute value: {type_name} holds an invalid code point")
    return "".join(map(chr, points))


def _fold(utf8: bytes) -> bytes:
    # bytes.split() splits on exactly OpenSSL's ossl_isspace() set (space, \t, \n, \v, \f, \r)
    # and bytes.lower() changes only A-Z, as ossl_tolower() does; working on bytes rather than
    # str keeps U+00A0, U+0085 and non-ASCII capitals as they are, as OpenSSL does.
    return b" ".join(utf8.split()).lower()


def _decoded_bit_string(content: bytes) -> bytes:
    # c2i_ASN1der.BIT_STRING keeps the unused-bits count and masks those bits off the last byte;
    # an empty bit string is re-encoded with a count of 0 whatever the input said.
    if not content:
        raise ValueError("attribute value: BIT STRING has no unused-bits octet")
    unused = content[0]
    if unused > 7:
        raise ValueError("attribute value: BIT STRING unused-bits count is over 7")
    if len(content) == 1:
        return b"\x00"
    return bytes([unused]) + content[1:-1] + bytes([content[-1] & (0xFF << unused) & 0xFF])


def _check_oid(content: bytes) -> None:
    # The checks of c2i_ASN1_OBJECT: at least one octet, the last one ends a subidentifier, and
    # no subidentifier starts with the padding octet 0x80.
    if not content or content[-1] & 0x80:
        raise ValueError("attribute type: OBJECT IDENTIFIER is truncated")
    for index, octet in enumerate(content):
        if octet == 0x80 and (index == 0 or not content[index - 1] & 0x80):
            raise ValueError("attribute type: OBJECT IDENTIFIER has a padded subidentifier")
