"""The desired-state validation rules on real, freshly generated PEMs: one case per rule."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.certificates import cert_info
from reconciler.core.desired import Finding, Identity, PolicySection, ProfileFile
from reconciler.core.identity import check_identity
from reconciler.core.pem import PemError, encode_pem, parse_pem
from reconciler.core.profile import check_profile
from reconciler.core.secret import SecretBytes
from reconciler.core.trust import check_trust
from reconciler.support import devpki

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CERT_FILE = "tls/cert.pem"
KEY_FILE = "tls/key.pem"
TRUST_FILE = "trust/corp.pem"
PROFILE_FILE = "profiles/relay.toml"
POLICY = PolicySection()


@dataclass(frozen=True)
class Pki:
    root: devpki.Issued
    inter: devpki.Issued
    leaf: devpki.Issued

    @property
    def chain_pem(self) -> bytes:
        return self.leaf.cert_pem + self.inter.cert_pem


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = devpki.make_ca("Test Root")
    inter = devpki.make_ca("Test Intermediate", issuer=root)
    return Pki(root, inter, devpki.issue(inter))


def identity(
    cert_pem: bytes,
    key_pem: bytes,
    *,
    policy: PolicySection = POLICY,
    now: dt.datetime = NOW,
) -> tuple[Identity | None, list[Finding]]:
    return check_identity(
        cert_pem,
        SecretBytes(key_pem),
        cert_file=CERT_FILE,
        key_file=KEY_FILE,
        policy=policy,
        now=now,
    )


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def only(findings: list[Finding], severity: str) -> Finding:
    """The single finding of that severity (fails loudly with all findings otherwise)."""
    matching = [f for f in findings if f.severity == severity]
    assert len(matching) == 1, [str(f) for f in findings]
    return matching[0]


# --------------------------------------------------------------------------- identity: happy path


def test_valid_identity_is_canonical_leaf_first(pki: Pki) -> None:
    ident, findings = check_identity(
        pki.chain_pem,
        SecretBytes(pki.leaf.key_pem),
        cert_file=CERT_FILE,
        key_file=KEY_FILE,
        policy=POLICY,
        now=NOW,
    )
    assert findings == []
    assert ident is not None
    pem = serialization.Encoding.PEM
    assert ident.cert_pem == pki.leaf.cert.public_bytes(pem) + pki.inter.cert.public_bytes(pem)
    assert ident.key_pem.reveal() == pki.leaf.key_pem
    assert ident.leaf.subject == "CN=gateway.test"
    assert [c.subject for c in ident.chain] == ["CN=Test Intermediate"]


@pytest.mark.parametrize("key_type", ["rsa2048", "ec256", "ec384", "ec521"])
def test_allowed_key_types_are_accepted(pki: Pki, key_type: devpki.KeyType) -> None:
    leaf = devpki.issue(pki.inter, key_type=key_type)
    ident, findings = identity(leaf.cert_pem + pki.inter.cert_pem, leaf.key_pem)
    assert findings == []
    assert ident is not None


def test_chain_may_end_with_the_root(pki: Pki) -> None:
    ident, findings = identity(pki.chain_pem + pki.root.cert_pem, pki.leaf.key_pem)
    assert findings == []
    assert ident is not None


# --------------------------------------------------------------------------- identity: cert file


def _junk_der_pem() -> bytes:
    return encode_pem("CERTIFICATE", b"\x30\x03\x02\x01\x01")


@pytest.mark.parametrize(
    ("cert_data", "reason"),
    [
        pytest.param(b"", "not PEM", id="empty"),
        pytest.param(b"hello, I am not a certificate\n", "not PEM", id="not-pem"),
        pytest.param(b"\x30\x82\x01\x00", "looks like binary DER", id="der-not-pem"),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\nMIIB\n", "no matching END", id="begin-without-end"
        ),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "not valid base64",
            id="bad-base64",
        ),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n", "empty", id="empty-block"
        ),
        pytest.param(_junk_der_pem(), "not a valid X.509 certificate", id="undecodable-der"),
        pytest.param(
            encode_pem("PUBLIC KEY", b"\x30\x00"), "no CERTIFICATE block", id="no-certificate"
        ),
    ],
)
def test_unreadable_cert_file_is_an_error(pki: Pki, cert_data: bytes, reason: str) -> None:
    ident, findings = identity(cert_data, pki.leaf.key_pem)
    assert ident is None
    err = only(findings, "error")
    assert (err.file, err.field) == (CERT_FILE, "identity.cert")
    assert reason in err.reason


def test_chain_in_wrong_order_names_the_position(pki: Pki) -> None:
    ident, findings = identity(pki.inter.cert_pem + pki.leaf.cert_pem, pki.leaf.key_pem)
    assert ident is None
    chain = [f for f in findings if "issuing order" in f.reason]
    assert len(chain) == 1
    assert (chain[0].severity, chain[0].file, chain[0].field) == (
        "error",
        CERT_FILE,
        "identity.cert",
    )
    assert "certificate 1 (CN=Test Intermediate)" in chain[0].reason
    assert "certificate 2 (CN=gateway.test)" in chain[0].reason


def test_chain_with_a_skipped_intermediate_is_an_error(pki: Pki) -> None:
    ident, findings = identity(pki.leaf.cert_pem + pki.root.cert_pem, pki.leaf.key_pem)
    assert ident is None
    err = only(findings, "error")
    assert "certificate 1 (CN=gateway.test) is not issued by the next" in err.reason
    assert "issuer name differs" in err.reason


def test_chain_with_a_lookalike_issuer_fails_the_signature_check(pki: Pki) -> None:
    impostor = devpki.make_ca("Test Intermediate", issuer=pki.root)  # same name, other key
    ident, findings = identity(pki.leaf.cert_pem + impostor.cert_pem, pki.leaf.key_pem)
    assert ident is None
    err = only(findings, "error")
    assert "signature does not verify" in err.reason


def test_private_key_in_cert_file_is_ignored_with_a_warning(pki: Pki) -> None:
    ident, findings = identity(pki.chain_pem + pki.leaf.key_pem, pki.leaf.key_pem)
    assert ident is not None
    warning = only(findings, "warning")
    assert (warning.file, warning.field) == (CERT_FILE, "identity.cert")
    assert "private key" in warning.reason
    assert b"PRIVATE KEY" not in ident.cert_pem


def test_expired_intermediate_is_a_warning(pki: Pki) -> None:
    old = devpki.make_ca(
        "Old Intermediate", issuer=pki.root, not_before=NOW - dt.timedelta(days=30), days=10
    )
    leaf = devpki.issue(old)
    _, findings = identity(leaf.cert_pem + old.cert_pem, leaf.key_pem)
    warning = only(findings, "warning")
    assert "certificate 2 (CN=Old Intermediate)" in warning.reason
    assert "expired" in warning.reason


# --------------------------------------------------------------------------- identity: key file


def _ed25519_leaf(pki: Pki) -> devpki.Issued:
    return devpki.issue(pki.inter, key=ed25519.Ed25519PrivateKey.generate())


def _legacy_encrypted(issued: devpki.Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret"),
    )


def _openssh(issued: devpki.Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


# Each case: a leaf of that key type (so only the key rule fires), the key bytes, the reason.
KEY_CASES: dict[str, tuple[str | None, Callable[[devpki.Issued], bytes], str]] = {
    "not-pem": (None, lambda i: b"just some text", "not PEM"),
    "no-key-block": (None, lambda i: i.cert_pem, "no PRIVATE KEY block"),
    "bad-base64": (
        None,
        # The label is split so that scanners for committed keys do not take this for one.
        lambda i: b"-----BEGIN " + b"PRIVATE KEY-----\n%%%%\n-----END " + b"PRIVATE KEY-----\n",
        "not valid base64",
    ),
    "undecodable": (None, lambda i: encode_pem("PRIVATE KEY", b"\x30\x00"), "not a readable"),
    "two-key-blocks": (None, lambda i: i.key_pem + i.key_pem, "2 private key blocks"),
    "encrypted-pkcs8": (None, lambda i: i.encrypted_key_pem(), "encrypted"),
    "encrypted-legacy": ("rsa2048", _legacy_encrypted, "encrypted"),
    "openssh": (None, _openssh, "OpenSSH"),
    "dsa": ("dsa2048", lambda i: i.key_pem, "DSA keys are not allowed"),
    "rsa1024": ("rsa1024", lambda i: i.key_pem, "RSA key of 1024 bits is too small"),
    "ec192": ("ec192", lambda i: i.key_pem, "EC curve secp192r1 is not allowed"),
    "ed25519": ("ed25519", lambda i: i.key_pem, "Ed25519 keys are not allowed"),
}


@pytest.mark.parametrize("case", list(KEY_CASES), ids=list(KEY_CASES))
def test_key_rule_is_an_error(pki: Pki, case: str) -> None:
    key_type, make_key, reason = KEY_CASES[case]
    if key_type == "ed25519":
        leaf = _ed25519_leaf(pki)
    elif key_type is None:
        leaf = pki.leaf
    else:
        leaf = devpki.issue(pki.inter, key_type=key_type)  # type: ignore[arg-type]
    ident, findings = identity(leaf.cert_pem + pki.inter.cert_pem, make_key(leaf))
    assert ident is None
    err = only(findings, "error")
    assert (err.file, err.field) == (KEY_FILE, "identity.key")
    assert reason in err.reason


def test_brainpool_curve_is_an_error(pki: Pki) -> None:
    leaf = devpki.issue(pki.inter, key=ec.generate_private_key(ec.BrainpoolP256R1()))
    _, findings = identity(leaf.cert_pem + pki.inter.cert_pem, leaf.key_pem)
    err = only(findings, "error")
    assert "EC curve brainpoolP256r1 is not allowed" in err.reason


def test_key_not_matching_the_leaf_is_an_error(pki: Pki) -> None:
    other = devpki.issue(pki.inter)
    ident, findings = identity(pki.chain_pem, other.key_pem)
    assert ident is None
    err = only(findings, "error")
    assert (err.file, err.field) == (KEY_FILE, "identity.key")
    assert "does not match the leaf certificate in tls/cert.pem" in err.reason


def test_ec_parameters_block_before_the_key_is_ignored(pki: Pki) -> None:
    # `openssl ecparam -genkey` writes an EC PARAMETERS block before the key.
    params = encode_pem("EC PARAMETERS", bytes.fromhex("06082a8648ce3d030107"))
    ident, findings = identity(pki.chain_pem, params + pki.leaf.key_pem)
    assert findings == []
    assert ident is not None
    assert ident.key_pem.reveal() == pki.leaf.key_pem


# --------------------------------------------------------------------------- identity: dates


def _leaf_dates(pki: Pki) -> tuple[dt.datetime, dt.datetime]:
    return pki.leaf.cert.not_valid_before_utc, pki.leaf.cert.not_valid_after_utc


@pytest.mark.parametrize(
    ("when", "severity", "reason"),
    [
        pytest.param(
            lambda nb, na: nb - dt.timedelta(hours=1), "error", "not valid yet", id="not-yet-valid"
        ),
        pytest.param(
            lambda nb, na: na + dt.timedelta(seconds=1), "error", "expired on", id="expired"
        ),
        pytest.param(
            lambda nb, na: na - dt.timedelta(days=3),
            "error",
            "fewer than policy.min_days_valid = 7",
            id="under-min-days",
        ),
        pytest.param(
            lambda nb, na: na - dt.timedelta(days=20),
            "warning",
            "fewer than 30",
            id="under-30-days",
        ),
    ],
)
def test_leaf_validity_window(
    pki: Pki, when: Callable[[dt.datetime, dt.datetime], dt.datetime], severity: str, reason: str
) -> None:
    now = when(*_leaf_dates(pki))
    ident, findings = identity(pki.chain_pem, pki.leaf.key_pem, now=now)
    assert len(findings) == 1, [str(f) for f in findings]
    finding = findings[0]
    assert (finding.severity, finding.file, finding.field) == (severity, CERT_FILE, "identity.cert")
    assert reason in finding.reason
    assert (ident is None) == (severity == "error")


def test_expired_leaf_from_devpki(pki: Pki) -> None:
    leaf = devpki.issue(pki.inter, not_before=NOW - dt.timedelta(days=400), days=365)
    _, findings = identity(leaf.cert_pem + pki.inter.cert_pem, leaf.key_pem)
    assert "expired on" in only(findings, "error").reason


def test_short_lived_leaf_with_min_days_zero_is_only_a_warning(pki: Pki) -> None:
    leaf = devpki.issue(pki.inter, days=3)
    ident, findings = identity(
        leaf.cert_pem + pki.inter.cert_pem,
        leaf.key_pem,
        policy=PolicySection(min_days_valid=0),
    )
    assert ident is not None
    assert "fewer than 30" in only(findings, "warning").reason


def test_naive_now_is_taken_as_utc(pki: Pki) -> None:
    ident, findings = identity(pki.chain_pem, pki.leaf.key_pem, now=NOW.replace(tzinfo=None))
    assert findings == []
    assert ident is not None


# --------------------------------------------------------------------------- identity: policy, EKU


def test_self_signed_leaf_is_an_error_unless_allowed() -> None:
    leaf = devpki.issue(None)
    ident, findings = identity(leaf.cert_pem, leaf.key_pem)
    assert ident is None
    err = only(findings, "error")
    assert (err.file, err.field) == (CERT_FILE, "identity.cert")
    assert "self-signed" in err.reason
    assert "policy.allow_self_signed" in err.reason

    allowed, findings = identity(
        leaf.cert_pem, leaf.key_pem, policy=PolicySection(allow_self_signed=True)
    )
    assert findings == []
    assert allowed is not None


@pytest.mark.parametrize(
    ("eku", "missing"),
    [
        pytest.param(("server",), "without clientAuth", id="server-only"),
        pytest.param(("client",), "without serverAuth", id="client-only"),
        pytest.param((), "without serverAuth and clientAuth", id="neither"),
    ],
)
def test_eku_without_server_and_client_is_a_warning(
    pki: Pki, eku: tuple[str, ...], missing: str
) -> None:
    if not eku:
        leaf = _leaf_with_eku(pki, [x509.ObjectIdentifier("1.3.6.1.5.5.7.3.4")])  # emailProtection
    else:
        leaf = devpki.issue(pki.inter, eku=eku)  # type: ignore[arg-type]
    ident, findings = identity(leaf.cert_pem + pki.inter.cert_pem, leaf.key_pem)
    assert ident is not None
    warning = only(findings, "warning")
    assert (warning.file, warning.field) == (CERT_FILE, "identity.cert")
    assert f"Extended Key Usage {missing}" in warning.reason


def _leaf_with_eku(pki: Pki, usages: list[x509.ObjectIdentifier]) -> devpki.Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=mail.test"))
        .issuer_name(pki.inter.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(pki.inter.key, hashes.SHA256())
    )
    return devpki.Issued(cert, key)


def test_no_eku_extension_is_fine(pki: Pki) -> None:
    leaf = devpki.issue(pki.inter, eku=None)
    ident, findings = identity(leaf.cert_pem + pki.inter.cert_pem, leaf.key_pem)
    assert findings == []
    assert ident is not None


def test_all_problems_are_reported_together() -> None:
    leaf = devpki.issue(
        None, key_type="rsa1024", not_before=NOW - dt.timedelta(days=400), days=365, eku=("server",)
    )
    ident, findings = identity(leaf.cert_pem, leaf.key_pem)
    assert ident is None
    reasons = " | ".join(f.reason for f in findings)
    for expected in ("expired on", "self-signed", "RSA key of 1024 bits", "without clientAuth"):
        assert expected in reasons


# --------------------------------------------------------------------------- identity: secrecy


def _key_fragments(key_pem: bytes) -> list[str]:
    """Pieces of the key in every form a message could leak it: base64 lines, DER hex."""
    body = [line for line in key_pem.decode().splitlines() if line and not line.startswith("-")]
    der = base64.b64decode("".join(body))
    lines = [line[8:24] for line in body if len(line) >= 24]
    return lines + [der[i : i + 8].hex() for i in range(0, len(der) - 7, 8)]


def test_key_bytes_never_appear_in_findings(pki: Pki) -> None:
    leaves = [devpki.issue(pki.inter, key_type=t) for t in ("rsa1024", "dsa2048", "ec192")]
    leaves += [_ed25519_leaf(pki), devpki.issue(pki.inter)]
    for leaf in leaves:
        key_pem = leaf.key_pem
        body = key_pem.split(b"\n")
        variants = [
            key_pem,  # wrong type or (last leaf) mismatched with pki.leaf
            b"\n".join([*body[:2], body[2][:-3] + b"!!!", *body[3:]]),  # bad base64
            encode_pem("PRIVATE KEY", base64.b64decode(b"".join(body[1:-2]))[:-7]),  # truncated
            encode_pem("RSA PRIVATE KEY", base64.b64decode(b"".join(body[1:-2]))),  # wrong label
            key_pem + key_pem,
        ]
        fragments = _key_fragments(key_pem)
        for variant in variants:
            ident, findings = identity(pki.chain_pem, variant)
            assert ident is None
            text = "\n".join(f"{f!s} {f!r}" for f in findings)
            assert findings
            for fragment in fragments:
                assert fragment not in text


def test_identity_repr_does_not_show_the_key(pki: Pki) -> None:
    ident, _ = identity(pki.chain_pem, pki.leaf.key_pem)
    for fragment in _key_fragments(pki.leaf.key_pem):
        assert fragment not in repr(ident)


# --------------------------------------------------------------------------- canonical form


def _mangle(pem: bytes) -> bytes:
    """The same PEM as an operator's tools might leave it: CRLF, trailing blanks, 76 columns,
    comments and PKCS#12 bag attributes between blocks."""
    out: list[bytes] = [b"Bag Attributes", b"    friendlyName: gateway", b"# a comment"]
    for block in parse_pem(pem):
        body = base64.b64encode(block.der)
        out.append(f"-----BEGIN {block.label}-----   ".encode())
        out += [body[i : i + 76] + b" \t" for i in range(0, len(body), 76)]
        out += [f"-----END {block.label}-----".encode(), b"", b"subject=CN=whatever"]
    return b"\r\n".join(out)


def test_mangled_pem_gives_identical_identity(pki: Pki) -> None:
    clean, _ = identity(pki.chain_pem, pki.leaf.key_pem)
    mangled, findings = identity(_mangle(pki.chain_pem), _mangle(pki.leaf.key_pem))
    assert findings == []
    assert clean is not None
    assert mangled is not None
    assert mangled.cert_pem == clean.cert_pem
    assert mangled.key_pem == clean.key_pem


def test_key_label_is_kept_and_body_rewrapped() -> None:
    leaf = devpki.issue(None, key_type="rsa2048")
    traditional = leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ident, findings = identity(
        leaf.cert_pem, _mangle(traditional), policy=PolicySection(allow_self_signed=True)
    )
    assert findings == []
    assert ident is not None
    key_pem = ident.key_pem.reveal()
    assert key_pem == traditional
    assert key_pem.startswith(b"-----BEGIN RSA " + b"PRIVATE KEY-----\n")
    assert all(len(line) <= 64 for line in key_pem.split(b"\n"))
    assert key_pem.endswith(b"-----END RSA PRIVATE KEY-----\n")


def test_legacy_x509_certificate_label_is_re_emitted_as_certificate(pki: Pki) -> None:
    legacy = encode_pem("X509 CERTIFICATE", pki.leaf.cert.public_bytes(serialization.Encoding.DER))
    ident, findings = identity(legacy + pki.inter.cert_pem, pki.leaf.key_pem)
    assert findings == []
    assert ident is not None
    assert ident.cert_pem == pki.chain_pem


def test_pem_errors_name_the_line_not_the_content() -> None:
    with pytest.raises(PemError, match=r"^line 3: BEGIN CERTIFICATE block is not valid base64$"):
        parse_pem(b"\n\n-----BEGIN CERTIFICATE-----\nSECRET*\n-----END CERTIFICATE-----\n")


# --------------------------------------------------------------------------- trust


def test_trust_bundle_is_canonical_in_file_order(pki: Pki) -> None:
    entry, findings = check_trust(
        "corp", _mangle(pki.root.cert_pem + pki.inter.cert_pem), file=TRUST_FILE, now=NOW
    )
    assert findings == []
    assert entry is not None
    assert entry.name == "corp"
    assert entry.pem == pki.root.cert_pem + pki.inter.cert_pem
    assert [c.subject for c in entry.certs] == ["CN=Test Root", "CN=Test Intermediate"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "not PEM", id="empty"),
        pytest.param(b"\x00\xff binary", "not PEM", id="not-pem"),
        pytest.param(encode_pem("PUBLIC KEY", b"\x30\x00"), "no CERTIFICATE block", id="no-cert"),
        pytest.param(_junk_der_pem(), "not a valid X.509 certificate", id="undecodable"),
    ],
)
def test_unreadable_trust_file_is_an_error(data: bytes, reason: str) -> None:
    entry, findings = check_trust("corp", data, file=TRUST_FILE, now=NOW)
    assert entry is None
    err = only(findings, "error")
    assert err.file == TRUST_FILE
    assert reason in err.reason


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        pytest.param(NOW - dt.timedelta(days=20), "expired on", id="expired"),
        pytest.param(NOW + dt.timedelta(days=2), "not valid yet", id="not-yet-valid"),
    ],
)
def test_trust_certificate_outside_its_validity_is_an_error(
    pki: Pki, start: dt.datetime, reason: str
) -> None:
    ca = devpki.make_ca("Dated CA", not_before=start, days=10)
    entry, findings = check_trust("corp", pki.root.cert_pem + ca.cert_pem, file=TRUST_FILE, now=NOW)
    assert entry is None
    err = only(findings, "error")
    assert err.file == TRUST_FILE
    assert "certificate 2 (CN=Dated CA)" in err.reason
    assert reason in err.reason


def test_the_same_trust_file_is_judged_at_each_moment() -> None:
    """Parsing is cached by content; the validity verdict is not: the same bytes are good
    today, an error once the certificate expired, and an error at a moment before it began."""
    ca = devpki.make_ca("Moment CA", not_before=NOW - dt.timedelta(days=1), days=10)
    entry, findings = check_trust("corp", ca.cert_pem, file=TRUST_FILE, now=NOW)
    assert entry is not None
    assert findings == []
    entry, findings = check_trust(
        "corp", ca.cert_pem, file=TRUST_FILE, now=NOW + dt.timedelta(days=30)
    )
    assert entry is None
    assert "certificate 1 (CN=Moment CA) is expired on" in only(findings, "error").reason
    entry, findings = check_trust(
        "corp", ca.cert_pem, file=TRUST_FILE, now=NOW - dt.timedelta(days=2)
    )
    assert entry is None
    assert "not valid yet" in only(findings, "error").reason
    assert check_trust("corp", ca.cert_pem, file=TRUST_FILE, now=NOW)[0] is not None


def test_trusting_a_server_certificate_directly_is_a_warning(pki: Pki) -> None:
    entry, findings = check_trust("corp", pki.leaf.cert_pem, file=TRUST_FILE, now=NOW)
    assert entry is not None
    warning = only(findings, "warning")
    assert warning.file == TRUST_FILE
    assert "not a CA certificate: trusts this server's certificate directly" in warning.reason


# --------------------------------------------------------------------------- cert_info


def test_cert_info_describes_the_certificate(pki: Pki) -> None:
    cert = pki.inter.cert
    info = cert_info(cert.public_bytes(serialization.Encoding.DER))
    assert info.subject == "CN=Test Intermediate"
    assert info.issuer == "CN=Test Root"
    assert info.serial == format(cert.serial_number, "x")
    assert re.fullmatch(r"[0-9a-f]+", info.serial)
    assert info.not_before == cert.not_valid_before_utc
    assert info.not_after.tzinfo is not None
    assert info.not_after.utcoffset() == dt.timedelta(0)
    assert info.sha256_fingerprint == pki.inter.fingerprint
    assert info.is_ca
    assert not info.self_signed


def test_cert_info_self_signed_and_leaf(pki: Pki) -> None:
    root = cert_info(pki.root.cert.public_bytes(serialization.Encoding.DER))
    leaf = cert_info(pki.leaf.cert.public_bytes(serialization.Encoding.DER))
    assert (root.is_ca, root.self_signed) == (True, True)
    assert (leaf.is_ca, leaf.self_signed) == (False, False)


def test_negative_serial_is_rejected_not_warned(pki: Pki) -> None:
    der = pki.leaf.cert.public_bytes(serialization.Encoding.DER)
    number = pki.leaf.cert.serial_number
    serial = number.to_bytes((number.bit_length() + 8) // 8, "big")  # DER INTEGER content
    at = der.index(serial)
    negative = der[:at] + b"\xff" + der[at + 1 :]
    with pytest.raises(ValueError, match="serial number is zero or negative"):
        cert_info(negative)
    entry, findings = check_trust(
        "neg", encode_pem("CERTIFICATE", negative), file=TRUST_FILE, now=NOW
    )
    assert entry is None
    assert (
        "certificate 1 (line 1) is not a valid X.509 certificate" in only(findings, "error").reason
    )


def test_cryptography_specific_errors_become_value_errors(pki: Pki) -> None:
    # x509.InvalidVersion is not a ValueError; found by the property tests below.
    der = pki.leaf.cert.public_bytes(serialization.Encoding.DER)
    v4 = der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03", 1)
    with pytest.raises(ValueError, match="not a valid X509 version"):
        cert_info(v4)
    entry, findings = check_trust("v4", encode_pem("CERTIFICATE", v4), file=TRUST_FILE, now=NOW)
    assert entry is None
    assert "not a valid X.509 certificate" in only(findings, "error").reason


def test_cert_info_rejects_junk_with_value_error() -> None:
    with pytest.raises(ValueError):
        cert_info(b"\x30\x03\x02\x01\x01")


# --------------------------------------------------------------------------- profiles


@pytest.mark.parametrize(
    ("url", "te", "expected"),
    [
        pytest.param(
            "https://core.example.com",
            None,
            ("core", "https", "core.example.com", 8008, "", "implicit"),
            id="https-default-port",
        ),
        pytest.param(
            "HTTPS://Core.Example.COM:8443/api/v1",
            None,
            ("core", "https", "core.example.com", 8443, "/api/v1", "implicit"),
            id="https-case-port-path",
        ),
        pytest.param(
            "http://[2001:DB8::1]/",
            None,
            ("core", "http", "2001:db8::1", 8008, "/", "none"),
            id="http-ipv6",
        ),
        pytest.param(
            "smtps://relay.example.com",
            None,
            ("smtp", "smtps", "relay.example.com", 465, "", "implicit"),
            id="smtps-default-port",
        ),
        pytest.param(
            "smtp://10.0.0.5:2525",
            "starttls-required",
            ("smtp", "smtp", "10.0.0.5", 2525, "", "starttls-required"),
            id="smtp-starttls-required",
        ),
        pytest.param(
            "smtp://relay.example.com",
            "none",
            ("smtp", "smtp", "relay.example.com", 25, "", "none"),
            id="smtp-none",
        ),
    ],
)
def test_profile_is_normalised(url: str, te: str | None, expected: tuple[object, ...]) -> None:
    model = ProfileFile(url=url, transport_encryption=te)  # type: ignore[arg-type]
    profile, findings = check_profile("relay", model, file=PROFILE_FILE, policy=POLICY)
    assert errors(findings) == []
    assert profile is not None
    assert profile.name == "relay"
    got = (profile.kind, profile.scheme, profile.host, profile.port, profile.path, profile.tls)
    assert got == expected


@pytest.mark.parametrize(
    ("url", "te", "field", "reason"),
    [
        pytest.param(
            "ftp://files.example.com", None, "url", "scheme 'ftp' is not supported", id="bad-scheme"
        ),
        pytest.param("relay.example.com:25", None, "url", "is not supported", id="no-scheme"),
        pytest.param("smtps:relay.example.com", None, "url", "no host", id="no-slashes"),
        pytest.param("https://", None, "url", "no host", id="no-host"),
        pytest.param("https://:443", None, "url", "no host", id="port-only"),
        pytest.param(
            "smtps://relay.example.com:0", None, "url", "out of range 1-65535", id="port-0"
        ),
        pytest.param(
            "smtps://relay.example.com:65536", None, "url", "out of range 1-65535", id="port-65536"
        ),
        pytest.param(
            "smtps://relay.example.com:99999999999", None, "url", "out of range", id="port-huge"
        ),
        pytest.param("smtps://relay.example.com:smtp", None, "url", "not a number", id="port-name"),
        pytest.param("smtps://relay.example.com:", None, "url", "empty port", id="port-empty"),
        pytest.param(
            "https://admin:hunter2@core.example.com", None, "url", "user info", id="user-info"
        ),
        pytest.param("https://core.example.com/?x=1", None, "url", "query", id="query"),
        pytest.param("https://core.example.com/#top", None, "url", "fragment", id="fragment"),
        pytest.param(
            "smtps://relay.example.com/inbox",
            None,
            "url",
            "path ('/inbox') is not allowed",
            id="smtp-path",
        ),
        pytest.param("https://core example.com", None, "url", "blank", id="blank"),
        pytest.param("https://exa$mple.com", None, "url", "not a valid host name", id="bad-host"),
        pytest.param("https://2001:db8::1/", None, "url", "in brackets", id="ipv6-unbracketed"),
        pytest.param("https://[not-ipv6]/", None, "url", "not a valid URL", id="ipv6-bad"),
        pytest.param(
            "smtp://relay.example.com",
            None,
            "transport_encryption",
            "required for smtp://",
            id="smtp-without-te",
        ),
        pytest.param(
            "smtps://relay.example.com",
            "starttls-required",
            "transport_encryption",
            "only allowed with smtp://",
            id="smtps-with-te",
        ),
        pytest.param(
            "https://core.example.com",
            "none",
            "transport_encryption",
            "only allowed with smtp://",
            id="https-with-te",
        ),
    ],
)
def test_bad_profile_is_an_error(url: str, te: str | None, field: str, reason: str) -> None:
    model = ProfileFile(url=url, transport_encryption=te)  # type: ignore[arg-type]
    profile, findings = check_profile("relay", model, file=PROFILE_FILE, policy=POLICY)
    assert profile is None
    err = errors(findings)[0]
    assert (err.file, err.field) == (PROFILE_FILE, field)
    assert reason in err.reason
    assert "hunter2" not in " ".join(str(f) for f in findings)


@pytest.mark.parametrize(
    ("url", "te", "expected"),
    [
        pytest.param("http://core.example.com:8008", None, [("url", "clear text")], id="http"),
        pytest.param(
            "smtp://relay.example.com",
            "none",
            [("transport_encryption", "clear text")],
            id="smtp-none",
        ),
        pytest.param(
            "smtp://relay.example.com",
            "starttls-optional",
            [
                ("transport_encryption", "falls back to clear text"),
                ("url", "smtps (implicit TLS) is preferred over STARTTLS"),
            ],
            id="starttls-optional",
        ),
        pytest.param(
            "smtp://relay.example.com",
            "starttls-required",
            [("url", "smtps (implicit TLS) is preferred over STARTTLS")],
            id="starttls-required",
        ),
        pytest.param("https://core.example.com:443", None, [], id="https"),
        pytest.param("smtps://relay.example.com", None, [], id="smtps"),
    ],
)
def test_profile_warnings(url: str, te: str | None, expected: list[tuple[str, str]]) -> None:
    model = ProfileFile(url=url, transport_encryption=te)  # type: ignore[arg-type]
    profile, findings = check_profile("relay", model, file=PROFILE_FILE, policy=POLICY)
    assert profile is not None
    assert [f.severity for f in findings] == ["warning"] * len(expected)
    assert all(f.file == PROFILE_FILE for f in findings)
    for finding, (field, reason) in zip(findings, expected, strict=True):
        assert finding.field == field
        assert reason in finding.reason


@pytest.mark.parametrize(
    ("url", "te", "field"),
    [
        pytest.param("http://core.example.com", None, "url", id="http"),
        pytest.param("smtp://relay.example.com", "none", "transport_encryption", id="smtp-none"),
        pytest.param(
            "smtp://relay.example.com",
            "starttls-optional",
            "transport_encryption",
            id="starttls-optional",
        ),
    ],
)
def test_cleartext_is_an_error_when_tls_is_required(url: str, te: str | None, field: str) -> None:
    model = ProfileFile(url=url, transport_encryption=te)  # type: ignore[arg-type]
    policy = PolicySection(require_tls_outbound=True)
    profile, findings = check_profile("relay", model, file=PROFILE_FILE, policy=policy)
    assert profile is None
    err = only(findings, "error")
    assert (err.file, err.field) == (PROFILE_FILE, field)
    assert "policy.require_tls_outbound" in err.reason


def test_profile_reports_url_and_transport_encryption_errors_together() -> None:
    model = ProfileFile(url="https://core.example.com/?x=1", transport_encryption="none")
    profile, findings = check_profile("relay", model, file=PROFILE_FILE, policy=POLICY)
    assert profile is None
    assert [f.field for f in errors(findings)] == ["url", "transport_encryption"]


def test_starttls_required_stays_allowed_when_tls_is_required() -> None:
    model = ProfileFile(url="smtp://relay.example.com", transport_encryption="starttls-required")
    policy = PolicySection(require_tls_outbound=True)
    profile, findings = check_profile("relay", model, file=PROFILE_FILE, policy=policy)
    assert profile is not None
    assert errors(findings) == []


# --------------------------------------------------------------------------- properties

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pemish(label: str) -> st.SearchStrategy[bytes]:
    """Well-framed PEM blocks around random bytes, so fuzzing reaches the X.509 and key parsers."""
    return st.binary(min_size=1, max_size=300).map(lambda der: encode_pem(label, der))


def _flipped(pem: bytes) -> st.SearchStrategy[bytes]:
    """A real PEM with one DER byte changed: reaches deep into the certificate/key parsers."""
    der = parse_pem(pem)[0].der
    label = parse_pem(pem)[0].label
    return st.tuples(st.integers(0, len(der) - 1), st.integers(1, 255)).map(
        lambda at: encode_pem(label, der[: at[0]] + bytes([der[at[0]] ^ at[1]]) + der[at[0] + 1 :])
    )


def _consistent(value: object, findings: list[Finding]) -> None:
    assert (value is None) == bool(errors(findings))
    assert all(isinstance(f, Finding) and f.reason for f in findings)


_STATIC = devpki.make_ca("Fuzz Root")
_STATIC_LEAF = devpki.issue(_STATIC)


@_FUZZ
@given(
    st.one_of(
        st.binary(max_size=600),
        _pemish("CERTIFICATE"),
        _flipped(_STATIC_LEAF.cert_pem),
    )
)
def test_any_cert_bytes_give_a_finding_or_an_identity(data: bytes) -> None:
    ident, findings = check_identity(
        data,
        SecretBytes(_STATIC_LEAF.key_pem),
        cert_file=CERT_FILE,
        key_file=KEY_FILE,
        policy=POLICY,
        now=NOW,
    )
    _consistent(ident, findings)


@_FUZZ
@given(
    st.one_of(
        st.binary(max_size=600),
        _pemish("PRIVATE KEY"),
        _pemish("EC PRIVATE KEY"),
        _flipped(_STATIC_LEAF.key_pem),
    )
)
def test_any_key_bytes_give_a_finding_or_an_identity(data: bytes) -> None:
    ident, findings = check_identity(
        _STATIC_LEAF.cert_pem,
        SecretBytes(data),
        cert_file=CERT_FILE,
        key_file=KEY_FILE,
        policy=POLICY,
        now=NOW,
    )
    _consistent(ident, findings)


@_FUZZ
@given(st.one_of(st.binary(max_size=600), _pemish("CERTIFICATE"), _flipped(_STATIC.cert_pem)))
def test_any_trust_bytes_give_a_finding_or_an_entry(data: bytes) -> None:
    entry, findings = check_trust("fuzz", data, file=TRUST_FILE, now=NOW)
    _consistent(entry, findings)


_URL_ALPHABET = "abcXYZ019:/?#@[]%.-_ \t\nHhTtPpSsMm"


@_FUZZ
@given(
    st.one_of(
        st.text(min_size=1, max_size=80),
        st.text(alphabet=_URL_ALPHABET, min_size=1, max_size=60),
        st.builds(
            lambda scheme, rest: scheme + rest,
            st.sampled_from(["http://", "https://", "smtp://", "smtps://", "SMTP://"]),
            st.text(alphabet=_URL_ALPHABET, max_size=40),
        ),
    ),
    st.sampled_from([None, "none", "starttls-optional", "starttls-required"]),
    st.booleans(),
)
def test_any_url_gives_a_finding_or_a_profile(url: str, te: str | None, strict: bool) -> None:
    model = ProfileFile(url=url, transport_encryption=te)  # type: ignore[arg-type]
    policy = PolicySection(require_tls_outbound=strict)
    profile, findings = check_profile("fuzz", model, file=PROFILE_FILE, policy=policy)
    _consistent(profile, findings)
    if profile is not None:
        assert 1 <= profile.port <= 65535
        assert profile.host == profile.host.lower()
        assert profile.host
