"""subject_hash agrees with `openssl x509 -subject_hash` on every kind of subject we can build.

The oracle is the installed openssl binary, run on PEM files; certificates are built with
cryptography at test time, and the cases cryptography cannot build (empty RDNs, BER lengths,
unsorted SETs, invalid text) are spliced into a real certificate's DER by the small encoder below,
which is independent of the module under test.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.subject_hash import certificate_subject, name_hash, subject_hash
from tests.helpers import REPO

ASN1 = _ASN1Type  # cryptography's only spelling of an explicit string type (NameAttribute _type)
CN, ORG, OU, EMAIL = (
    NameOID.COMMON_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.EMAIL_ADDRESS,
)
# Never the subject of a test certificate, so a splice can find the subject bytes unambiguously.
ISSUER = x509.Name([x509.NameAttribute(CN, "subject-hash test issuer")])
PLACEHOLDER = x509.Name([x509.NameAttribute(CN, "subject-hash placeholder")])

OpensslHash = Callable[[bytes], str | None]


# -- certificates and the openssl oracle ---------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def make_cert(key: ec.EllipticCurvePrivateKey) -> Callable[[x509.Name], bytes]:
    def build(subject: x509.Name) -> bytes:
        start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ISSUER)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(Encoding.DER)

    return build


@pytest.fixture(scope="module")
def openssl_hash(tmp_path_factory: pytest.TempPathFactory) -> OpensslHash:
    """What `openssl x509 -subject_hash` prints for a DER certificate, or None if it fails."""
    directory = tmp_path_factory.mktemp("subject-hash")
    counter = itertools.count()

    def run(cert_der: bytes) -> str | None:
        path = directory / f"cert{next(counter)}.pem"
        path.write_bytes(pem(cert_der))
        result = subprocess.run(
            ["openssl", "x509", "-subject_hash", "-noout", "-in", str(path)],
            capture_output=True,
            check=False,
        )
        return result.stdout.decode().strip() if result.returncode == 0 else None

    return run


def pem(cert_der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(cert_der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def tlv(identifier: int, content: bytes, *, length_octets: int = 0) -> bytes:
    """An element with a one-octet tag: DER, or with `length_octets` a padded long-form length
    (BER, which OpenSSL reads)."""
    size = len(content)
    if not length_octets and size >= 0x80:
        length_octets = (size.bit_length() + 7) // 8
    if length_octets:
        return (
            bytes([identifier, 0x80 | length_octets])
            + size.to_bytes(length_octets, "big")
            + content
        )
    return bytes([identifier, size]) + content


def header_size(der: bytes) -> int:
    return 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)


def splice_subject(cert_der: bytes, subject_der: bytes) -> bytes:
    """`cert_der` (whose subject is PLACEHOLDER) with the subject replaced by raw bytes.

    The signature no longer matches, which `openssl x509 -subject_hash` does not check."""
    tbs = x509.load_der_x509_certificate(cert_der).tbs_certificate_bytes
    old = PLACEHOLDER.public_bytes()
    assert tbs.count(old) == 1
    new_tbs = tlv(0x30, tbs[header_size(tbs) :].replace(old, subject_der))
    rest = cert_der[header_size(cert_der) + len(tbs) :]
    return tlv(0x30, new_tbs + rest)


def atv(oid_content: bytes, value: bytes) -> bytes:
    return tlv(0x30, tlv(0x06, oid_content) + value)


CN_OID = bytes.fromhex("550403")
O_OID = bytes.fromhex("55040a")


def utf8(text: str) -> bytes:
    return tlv(0x0C, text.encode())


def attr(
    oid: x509.ObjectIdentifier, value: str | bytes, kind: _ASN1Type | None = None
) -> x509.NameAttribute[str | bytes]:
    """An attribute of an explicit string type; lengths unchecked, as a foreign CA's may be."""
    with warnings.catch_warnings():
        # cryptography warns, rather than fails, about a CN over 64 characters with _validate off.
        warnings.simplefilter("ignore", UserWarning)
        return x509.NameAttribute(oid, value, _type=kind, _validate=False)


def rdns(*groups: list[x509.NameAttribute[str | bytes]]) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName(group) for group in groups])


# -- subjects cryptography builds ------------------------------------------------------------------

LONG_TEXT = "Long Common Name " * 12  # 204 bytes: a value with a two-octet long-form length

SUBJECTS: dict[str, x509.Name] = {
    "plain-cn": x509.Name([attr(CN, "gateway.test")]),
    "mixed-case": x509.Name([attr(CN, "GateWay.Example.TEST"), attr(ORG, "ACME Corp")]),
    "spaces-and-tabs": x509.Name([attr(CN, "  \tLeading, \t  internal  and trailing\t ")]),
    "all-ascii-whitespace": x509.Name([attr(CN, "\n\x0b\x0ca\r\n\x0b\x0c\tb \r")]),
    "only-whitespace": x509.Name([attr(CN, " \t ")]),
    "non-ascii-utf8": x509.Name([attr(CN, "Café Müller"), attr(ORG, "日本 語 Ünïcode ÉTÉ")]),
    "non-ascii-spaces-kept": x509.Name([attr(CN, "\u00a0a\u2003b\u3000c\u0085")]),
    "astral-utf8": x509.Name([attr(CN, "Emoji 😀 Name")]),
    "printable": x509.Name([attr(CN, "  Printable  NAME ", ASN1.PrintableString)]),
    "ia5-email": x509.Name([attr(EMAIL, "Admin@Example.TEST"), attr(CN, "x")]),
    "bmp": x509.Name([attr(CN, "  BMP Ünï  €  ", ASN1.BMPString)]),
    "universal": x509.Name([attr(CN, " Universal 😀 ÀB ", ASN1.UniversalString)]),
    "t61-ascii": x509.Name([attr(CN, " T61  Name ", ASN1.T61String)]),
    # cryptography writes UTF-8 bytes under the T61 tag; OpenSSL reads them as Latin-1.
    "t61-latin1": x509.Name([attr(CN, "T61 Égalité", ASN1.T61String)]),
    "numeric-not-folded": x509.Name([attr(NameOID.SERIAL_NUMBER, " 12  34 ", ASN1.NumericString)]),
    "bit-string": x509.Name([attr(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\x80", ASN1.BitString)]),
    "bit-string-unused-bits-set": x509.Name(
        [attr(NameOID.X500_UNIQUE_IDENTIFIER, b"\x03\xff\xff", ASN1.BitString)]
    ),
    "bit-string-empty": x509.Name([attr(NameOID.X500_UNIQUE_IDENTIFIER, b"\x05", ASN1.BitString)]),
    "multi-valued-rdn": rdns(
        [attr(CN, "Zed"), attr(ORG, "alpha"), attr(OU, "Mid")],
        [attr(NameOID.COUNTRY_NAME, "DE")],
    ),
    # Encoded order puts O ("bb", shorter) first; folding makes CN shorter, so it sorts first.
    "multi-valued-rdn-order-changes": rdns([attr(CN, "    A     "), attr(ORG, "bb")]),
    "multi-valued-rdn-mixed-types": rdns(
        [attr(CN, "same", ASN1.PrintableString), attr(ORG, "SAME", ASN1.BMPString)]
    ),
    "over-127-bytes": x509.Name([attr(OU, f"Unit {n}") for n in range(12)]),
    "over-255-bytes": x509.Name([attr(OU, f"Organisational Unit {n}") for n in range(12)]),
    "long-cn": x509.Name([attr(CN, LONG_TEXT)]),
    "long-cn-over-127": x509.Name([attr(CN, "x" * 130)]),
    "empty": x509.Name([]),
}


def _assert_matches_openssl(cert_der: bytes, openssl_hash: OpensslHash) -> None:
    expected = openssl_hash(cert_der)
    assert expected is not None
    assert subject_hash(cert_der) == expected


@pytest.mark.parametrize("subject", SUBJECTS.values(), ids=SUBJECTS.keys())
def test_matches_openssl(
    subject: x509.Name, make_cert: Callable[[x509.Name], bytes], openssl_hash: OpensslHash
) -> None:
    _assert_matches_openssl(make_cert(subject), openssl_hash)


def test_certificate_subject_is_the_encoded_subject(
    make_cert: Callable[[x509.Name], bytes],
) -> None:
    subject = SUBJECTS["over-255-bytes"]
    assert len(subject.public_bytes()) > 255
    assert certificate_subject(make_cert(subject)) == subject.public_bytes()


def test_empty_name_hashes_the_empty_string() -> None:
    # SHA-1("") = da39a3ee...; the first four bytes read little-endian.
    assert name_hash(bytes.fromhex("3000")) == 0xEEA339DA


def test_folding_makes_equal_names_equal() -> None:
    loud = rdns([attr(CN, "  GATEWAY   Test ", ASN1.PrintableString)])
    quiet = rdns([attr(CN, "gateway test")])
    assert name_hash(loud.public_bytes()) == name_hash(quiet.public_bytes())


def test_version_1_certificate(
    make_cert: Callable[[x509.Name], bytes], openssl_hash: OpensslHash
) -> None:
    """A v1 certificate has no [0] version field before the serial number."""
    cert_der = make_cert(SUBJECTS["mixed-case"])
    tbs = x509.load_der_x509_certificate(cert_der).tbs_certificate_bytes
    body = tbs[header_size(tbs) :]
    assert body.startswith(bytes.fromhex("a003020102"))
    v1_tbs = tlv(0x30, body[5:])
    v1 = tlv(0x30, v1_tbs + cert_der[header_size(cert_der) + len(tbs) :])
    assert openssl_hash(v1) == subject_hash(v1) == openssl_hash(cert_der)


# -- subjects spliced by hand: what OpenSSL accepts, hashed the same way --------------------------

SPLICED: dict[str, bytes] = {
    "unsorted-set": tlv(0x31, atv(O_OID, utf8("b")) + atv(CN_OID, utf8("a"))),
    "empty-rdn-dropped": tlv(0x31, atv(CN_OID, utf8("a"))) + tlv(0x31, b""),
    "only-empty-rdns": tlv(0x31, b"") + tlv(0x31, b""),
    "non-minimal-lengths": tlv(
        0x31,
        tlv(0x30, tlv(0x06, CN_OID) + tlv(0x0C, b"Bloated", length_octets=2), length_octets=1),
        length_octets=3,
    ),
    "high-tag-number-form": tlv(0x31, atv(CN_OID, b"\x1f\x0c\x03ABC")),
    "sequence-value-verbatim": tlv(
        0x31, atv(CN_OID, tlv(0x30, b"\x0c\x81\x02Ab", length_octets=1))
    ),
    "unknown-type-copied": tlv(0x31, atv(CN_OID, tlv(0x0B, b"Kept  AS is"))),
    "empty-utf8": tlv(0x31, atv(CN_OID, utf8(""))),
    "nul-in-value": tlv(0x31, atv(CN_OID, utf8("A\x00 B"))),
    "latin1-bytes-in-printable": tlv(0x31, atv(CN_OID, tlv(0x13, b"\xa0X\x85\xc9 "))),
    # cryptography no longer writes non-ASCII IA5String values; OpenSSL still reads them.
    "utf8-bytes-in-ia5": tlv(0x31, atv(CN_OID, tlv(0x16, "  Ünï  Côde ".encode()))),
    "bmp-empty": tlv(0x31, atv(CN_OID, tlv(0x1E, b""))),
}


@pytest.mark.parametrize("rdn_bytes", SPLICED.values(), ids=SPLICED.keys())
def test_spliced_subject_matches_openssl(
    rdn_bytes: bytes, make_cert: Callable[[x509.Name], bytes], openssl_hash: OpensslHash
) -> None:
    subject_der = tlv(0x30, rdn_bytes)
    cert_der = splice_subject(make_cert(PLACEHOLDER), subject_der)
    expected = openssl_hash(cert_der)
    assert expected is not None
    assert certificate_subject(cert_der) == subject_der
    assert subject_hash(cert_der) == expected


# -- subjects OpenSSL refuses to load: refused here too, never a hash it would not look up ------

REFUSED: dict[str, x509.Name | bytes] = {
    # ASN1_MASK_CANON names VisibleString, but the Name decoder rejects it before canonicalising.
    "visible-string": x509.Name([attr(CN, "visible", ASN1.VisibleString)]),
    "octet-string": x509.Name([attr(CN, "octets", ASN1.OctetString)]),
    "utc-time": x509.Name([attr(CN, "240101000000Z", ASN1.UTCTime)]),
    "generalized-time": x509.Name([attr(CN, "20240101000000Z", ASN1.GeneralizedTime)]),
    # UTF-16 surrogate pair; OpenSSL reads BMPString as UCS-2 and refuses surrogates.
    "bmp-astral": x509.Name([attr(CN, "😀", ASN1.BMPString)]),
    "bit-string-unused-over-7": x509.Name(
        [attr(NameOID.X500_UNIQUE_IDENTIFIER, b"\x08\x00", ASN1.BitString)]
    ),
    # Spliced RDNs (the bytes inside the Name's SEQUENCE):
    "utf8-invalid": tlv(0x31, atv(CN_OID, tlv(0x0C, b"\xc3("))),
    "utf8-overlong": tlv(0x31, atv(CN_OID, tlv(0x0C, b"\xc0\xaf"))),
    "utf8-surrogate": tlv(0x31, atv(CN_OID, tlv(0x0C, b"\xed\xa0\x80"))),
    "bmp-odd-length": tlv(0x31, atv(CN_OID, tlv(0x1E, b"\x00A\x00"))),
    "universal-out-of-range": tlv(0x31, atv(CN_OID, tlv(0x1C, b"\x00\x11\x00\x00"))),
    "context-class-value": tlv(0x31, atv(CN_OID, tlv(0x80, b"x"))),
    "oid-padded": tlv(0x31, atv(b"\x55\x80\x04\x03", utf8("x"))),
    "atv-extra-element": tlv(0x31, tlv(0x30, tlv(0x06, CN_OID) + utf8("a") + utf8("b"))),
    "rdn-not-a-set": tlv(0x30, atv(CN_OID, utf8("a"))),
}


@pytest.mark.parametrize("subject", REFUSED.values(), ids=REFUSED.keys())
def test_refuses_what_openssl_refuses(
    subject: x509.Name | bytes,
    make_cert: Callable[[x509.Name], bytes],
    openssl_hash: OpensslHash,
) -> None:
    if isinstance(subject, x509.Name):
        cert_der = make_cert(subject)
    else:
        cert_der = splice_subject(make_cert(PLACEHOLDER), tlv(0x30, subject))
    assert openssl_hash(cert_der) is None
    with pytest.raises(ValueError):
        subject_hash(cert_der)


# -- malformed DER ---------------------------------------------------------------------------------


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda cert: b"",
    "one-byte": lambda cert: b"\x30",
    "garbage": lambda cert: b"not a certificate at all",
    "pem-text": pem,
    "truncated": lambda cert: cert[:-1],
    "trailing-byte": lambda cert: cert + b"\x00",
    "indefinite-length": lambda cert: b"\x30\x80" + cert[header_size(cert) :] + b"\x00\x00",
    "length-past-end": lambda cert: b"\x30\x84\x7f\xff\xff\xff" + cert[header_size(cert) :],
    "not-a-sequence": lambda cert: b"\x31" + cert[1:],
    "tbs-only-serial": lambda cert: tlv(0x30, tlv(0x30, tlv(0x02, b"\x01"))),
    "serial-wrong-type": lambda cert: tlv(0x30, tlv(0x30, tlv(0x04, b"\x01"))),
    "version-primitive": lambda cert: tlv(0x30, tlv(0x30, tlv(0x80, b"\x02") + tlv(0x02, b"\x01"))),
}


@pytest.mark.parametrize("mangle", MALFORMED.values(), ids=MALFORMED.keys())
def test_certificate_subject_rejects_malformed_der(
    mangle: Callable[[bytes], bytes], make_cert: Callable[[x509.Name], bytes]
) -> None:
    with pytest.raises(ValueError):
        certificate_subject(mangle(make_cert(SUBJECTS["plain-cn"])))


@pytest.mark.parametrize(
    "name_der",
    [b"", b"\x30", b"\x30\x00\x00", b"\x31\x00", b"\x30\x02\x31\x05", b"\x30\x80\x00\x00"],
    ids=["empty", "header-only", "trailing", "set-not-sequence", "inner-overrun", "indefinite"],
)
def test_name_hash_rejects_malformed_der(name_der: bytes) -> None:
    with pytest.raises(ValueError):
        name_hash(name_der)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_name_content_gives_a_hash_or_a_value_error(content: bytes) -> None:
    """Inside a well-formed outer SEQUENCE, so the examples reach the RDN and value parsers."""
    try:
        digest = name_hash(tlv(0x30, content))
    except ValueError:
        return
    assert 0 <= digest < 2**32


@settings(max_examples=300)
@given(position=st.integers(min_value=0), octet=st.integers(0, 255), cut=st.booleans())
def test_damaged_certificate_gives_a_hash_or_a_value_error(
    position: int, octet: int, cut: bool, make_cert: Callable[[x509.Name], bytes]
) -> None:
    cert_der = bytearray(make_cert(SUBJECTS["multi-valued-rdn"]))
    position %= len(cert_der)
    cert_der[position] = octet
    damaged = bytes(cert_der[:position] if cut else cert_der)
    try:
        digest = subject_hash(damaged)
    except ValueError:
        return
    assert len(digest) == 8
    assert int(digest, 16) >= 0


def test_imports_without_site_packages() -> None:
    """Stdlib only: the hash needs no cryptography (nor anything outside the standard library)."""
    code = (
        "import sys\n"
        "from reconciler.core.subject_hash import name_hash\n"
        "assert name_hash(bytes.fromhex('3000')) == 0xEEA339DA\n"
        "assert 'cryptography' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# -- property: random names, against openssl -----------------------------------------------------

# Whitespace and case are what folding changes, so they are over-represented.
_ANY_TEXT = st.text(
    st.one_of(
        st.sampled_from(" \t\n\x0b\x0c\r\u00a0\u0085AaZzÉé"),
        st.characters(exclude_categories=["Cs"]),
    ),
    min_size=1,
    max_size=24,
)
_BMP_TEXT = st.text(
    st.one_of(
        st.sampled_from(" \tAaZz"),
        st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]),
    ),
    min_size=1,
    max_size=24,
)
# cryptography enforces PrintableString's alphabet and IA5String's ASCII (non-ASCII IA5 bytes are
# spliced by hand above); T61String gets UTF-8 bytes.
_PRINTABLE_TEXT = st.text(
    st.sampled_from("ABCXYZabcxyz0189 '()+,-./:=?"),
    min_size=1,
    max_size=24,
)
_KINDS: dict[_ASN1Type, st.SearchStrategy[str]] = {
    ASN1.UTF8String: _ANY_TEXT,
    ASN1.PrintableString: _PRINTABLE_TEXT,
    ASN1.T61String: _ANY_TEXT,
    ASN1.IA5String: st.text(
        st.characters(max_codepoint=0x7F, exclude_categories=["Cs"]), min_size=1, max_size=24
    ),
    ASN1.BMPString: _BMP_TEXT,
    ASN1.UniversalString: _ANY_TEXT,
}


@st.composite
def _attributes(draw: st.DrawFn) -> x509.NameAttribute[str | bytes]:
    oid = draw(st.sampled_from([CN, ORG, OU]))
    kind = draw(st.sampled_from(list(_KINDS)))
    return attr(oid, draw(_KINDS[kind]), kind)


# cryptography refuses an RDN holding the same attribute twice.
_RDNS = st.lists(_attributes(), min_size=1, max_size=3, unique_by=lambda a: (a.oid, a.value))
_NAMES = st.lists(_RDNS, max_size=4).map(lambda groups: rdns(*groups))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_NAMES)
def test_random_names_match_openssl(
    subject: x509.Name, make_cert: Callable[[x509.Name], bytes], openssl_hash: OpensslHash
) -> None:
    _assert_matches_openssl(make_cert(subject), openssl_hash)
