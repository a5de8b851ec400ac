"""PEM / X.509 / key / profile checks on bytes: the SPEC section 2 rules, pure and collected.

Every validator takes bytes or models, never paths, and returns a value (only when there is no
error) together with every finding it collected, so an operator sees all problems of a state in
one run. Third-party exceptions (cryptography's ValueError, TypeError, InvalidSignature,
UnsupportedAlgorithm; urllib's ValueError) become Findings naming the file and the field here.

Private key bytes are read only through `SecretBytes.reveal()` and never formatted into a message:
key findings say what is wrong (type, size, curve, mismatch), never what the key is.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler.core.desired import (
    CertInfo,
    Finding,
    Identity,
    PolicySection,
    Profile,
    ProfileFile,
    ProfileTls,
    TransportEncryption,
    TrustEntry,
)
from reconciler.core.pem import PemBlock, PemError, encode_pem, parse_pem
from reconciler.core.secret import SecretBytes

__all__ = [
    "check_identity",
    "check_trust",
    "check_profile",
    "cert_info",
    "WARN_DAYS",
    "MIN_RSA_BITS",
    "ALLOWED_CURVES",
    "DEFAULT_PORTS",
]

WARN_DAYS = 30
"""A leaf with fewer days left than this gets a warning (SPEC section 2)."""
MIN_RSA_BITS = 2048
ALLOWED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443, "smtp": 25, "smtps": 465}

# RFC 7468 names CERTIFICATE; the two legacy spellings are accepted and re-emitted canonically.
_CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "X.509 CERTIFICATE"})
_KEY_FIELD = "identity.key"
_CERT_FIELD = "identity.cert"
_KEY_ADVICE = "use RSA (2048 bits or more) or EC on P-256, P-384 or P-521"
_X509_ERRORS = (
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
# Crypto failures that mean "this input is not what it claims"; anything else is a bug and raises.
_CRYPTO_ERRORS = (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm)
# Sized for the benchmarks' 10,000 trust entries plus the identity chain, with room for renewals;
# an entry is its DER key plus a small CertInfo (about 2 KB), so a full cache stays near 30 MB.
_CERT_CACHE_SIZE = 16384

_Scheme = Literal["http", "https", "smtp", "smtps"]
_SCHEMES: dict[str, _Scheme] = {"http": "http", "https": "https", "smtp": "smtp", "smtps": "smtps"}
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


# --------------------------------------------------------------------------- certificates


def cert_info(der: bytes) -> CertInfo:
    """Describe a certificate given as DER.

    Raises ValueError when the bytes are not a certificate cryptography can read. Results are
    cached by the DER bytes: trust stores are large and change rarely between passes.
    """
    return _cert_info_cached(bytes(der))


@functools.lru_cache(maxsize=_CERT_CACHE_SIZE)
def _cert_info_cached(der: bytes) -> CertInfo:
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
            issuer=cert.issuer.rfc4514_string(),
            serial=f"{cert.serial_number:x}",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
            is_ca=is_ca,
            self_signed=_signed_by(cert, cert),
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


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer` names and signed `cert` (name match and signature check)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except _CRYPTO_ERRORS:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Cert:
    """One decoded certificate of a file: position (1-based), DER, info, canonical PEM."""

    position: int
    der: bytes
    info: CertInfo
    pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        # Loaded on demand: only the identity's few certificates need the object, and trust
        # files (thousands in the benchmarks) are served by the cached CertInfo alone.
        return x509.load_der_x509_certificate(self.der)

    @property
    def name(self) -> str:
        return _cert_name(self.position, self.info)


def _cert_name(position: int, info: CertInfo) -> str:
    return f"certificate {position} ({info.subject or 'empty subject'})"


class _Findings:
    """The findings of one validator call, in the order they were found."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def error(self, file: str, field: str | None, reason: str) -> None:
        self.items.append(Finding("error", file, field, reason))

    def warning(self, file: str, field: str | None, reason: str) -> None:
        self.items.append(Finding("warning", file, field, reason))

    def add(
        self, severity: Literal["error", "warning"], file: str, field: str | None, reason: str
    ) -> None:
        self.items.append(Finding(severity, file, field, reason))

    @property
    def has_error(self) -> bool:
        return any(f.severity == "error" for f in self.items)


def _read_certs(data: bytes, file: str, field: str | None, out: _Findings) -> list[_Cert] | None:
    """Decode every certificate block; None (with an error recorded) when any cannot be read."""
    try:
        blocks = parse_pem(data)
    except PemError as exc:
        out.error(file, field, f"not valid PEM: {exc}")
        return None
    if not blocks:
        hint = (
            " (it looks like binary DER: convert it with `openssl x509 -inform der`)"
            if data[:1] == b"\x30"
            else ""
        )
        out.error(file, field, f"not PEM: no -----BEGIN CERTIFICATE----- line found{hint}")
        return None
    cert_blocks = [b for b in blocks if b.label in _CERT_LABELS]
    others = sorted({b.label for b in blocks if b.label not in _CERT_LABELS})
    if any(label.endswith("PRIVATE KEY") for label in others):
        out.warning(
            file,
            field,
            "holds a private key block, which is ignored; keep private keys out of "
            "certificate files (this file is readable by everyone who can read the state)",
        )
    if not cert_blocks:
        found = ", ".join(others)
        out.error(file, field, f"no CERTIFICATE block (found only: {found})")
        return None
    certs: list[_Cert] = []
    ok = True
    for position, block in enumerate(cert_blocks, start=1):
        decoded = _decode_cert(block, position)
        if isinstance(decoded, str):
            out.error(file, field, decoded)
            ok = False
        else:
            certs.append(decoded)
    return certs if ok else None


def _decode_cert(block: PemBlock, position: int) -> _Cert | str:
    """The decoded certificate, or the reason it cannot be read."""
    where = f"certificate {position} (line {block.line})"
    try:
        info = cert_info(block.der)
    except _CRYPTO_ERRORS as exc:
        return f"{where} is not a valid X.509 certificate: {exc}"
    return _Cert(position, block.der, info, encode_pem("CERTIFICATE", block.der))


def _utc(now: datetime) -> datetime:
    # A naive `now` is taken as UTC rather than rejected: comparing naive and aware raises.
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validity_problem(info: CertInfo, now: datetime) -> str | None:
    if now < info.not_before:
        return f"not valid yet: valid from {_stamp(info.not_before)}"
    if now > info.not_after:
        return f"expired on {_stamp(info.not_after)}"
    return None


# --------------------------------------------------------------------------- identity


def check_identity(
    cert_data: bytes,
    key_data: SecretBytes,
    *,
    cert_file: str,
    key_file: str,
    policy: PolicySection,
    now: datetime,
) -> tuple[Identity | None, list[Finding]]:
    """Validate the digital ID; an Identity only when there is no error among the findings.

    `Identity.chain` holds the certificates after the leaf (intermediates, and a root if the
    file has one), in file order.
    """
    now = _utc(now)
    out = _Findings()
    certs = _read_certs(cert_data, cert_file, _CERT_FIELD, out)
    if certs:
        _check_chain_order(certs, cert_file, out)
        _check_leaf(certs[0], policy, now, cert_file, out)
        for cert in certs[1:]:
            problem = _validity_problem(cert.info, now)
            if problem:
                # Not a SPEC error row (only the leaf's dates are), but clients will refuse it.
                out.warning(cert_file, _CERT_FIELD, f"{cert.name} in the chain is {problem}")
    key = _read_key(key_data, key_file, out)
    if key is not None and certs:
        _check_key_matches(key[1], certs[0], cert_file, key_file, out)
    if out.has_error or certs is None or key is None:
        return None, out.items
    identity = Identity(
        cert_pem=b"".join(c.pem for c in certs),
        key_pem=key[0],
        leaf=certs[0].info,
        chain=tuple(c.info for c in certs[1:]),
    )
    return identity, out.items


def _check_chain_order(certs: list[_Cert], file: str, out: _Findings) -> None:
    for child, parent in itertools.pairwise(certs):
        if _signed_by(child.cert, parent.cert):
            continue
        how = (
            "its issuer name differs from that subject"
            if child.cert.issuer != parent.cert.subject
            else "the signature does not verify with that certificate's key"
        )
        out.error(
            file,
            _CERT_FIELD,
            f"chain not in issuing order: {child.name} is not issued by the next, "
            f"{parent.name} ({how}); put the leaf first, then each issuer in order",
        )


def _check_leaf(
    leaf: _Cert, policy: PolicySection, now: datetime, file: str, out: _Findings
) -> None:
    info = leaf.info
    problem = _validity_problem(info, now)
    if problem:
        out.error(file, _CERT_FIELD, f"leaf {leaf.name} is {problem}")
    else:
        left = info.not_after - now
        days = left.days
        until = _stamp(info.not_after)
        if left < timedelta(days=policy.min_days_valid):
            out.error(
                file,
                _CERT_FIELD,
                f"leaf {leaf.name} expires on {until}, in {days} days: fewer than "
                f"policy.min_days_valid = {policy.min_days_valid}; renew it",
            )
        elif left < timedelta(days=WARN_DAYS):
            out.warning(
                file,
                _CERT_FIELD,
                f"leaf {leaf.name} expires on {until}, in {days} days "
                f"(fewer than {WARN_DAYS}); renew it soon",
            )
    if info.is_ca:
        out.error(
            file,
            _CERT_FIELD,
            f"first certificate {leaf.name} is a CA certificate (basicConstraints CA:TRUE), "
            "not the gateway's own: put the gateway's leaf certificate first, then its issuers",
        )
    if info.self_signed and not policy.allow_self_signed:
        out.error(
            file,
            _CERT_FIELD,
            f"leaf {leaf.name} is self-signed, and policy.allow_self_signed is false; "
            "use a certificate issued by a CA (or allow self-signed outside production)",
        )
    try:
        eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    missing = [
        name
        for oid, name in (
            (ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"),
            (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth"),
        )
        if oid not in eku
    ]
    if missing:
        out.warning(
            file,
            _CERT_FIELD,
            f"leaf {leaf.name} has an Extended Key Usage without {' and '.join(missing)}; "
            "the digital ID is used as a TLS server and as a TLS client, so peers may refuse it",
        )


def _read_key(
    key_data: SecretBytes, file: str, out: _Findings
) -> tuple[SecretBytes, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] | None:
    """The canonical key PEM and the loaded key, or None with the reasons recorded."""
    try:
        blocks = parse_pem(key_data.reveal())
    except PemError as exc:
        out.error(file, _KEY_FIELD, f"not valid PEM: {exc}")
        return None
    if not blocks:
        out.error(file, _KEY_FIELD, "not PEM: no BEGIN line of a private key block found")
        return None
    keys = [b for b in blocks if b.label.endswith("PRIVATE KEY")]
    if not keys:
        found = ", ".join(sorted({b.label for b in blocks}))
        out.error(file, _KEY_FIELD, f"no PRIVATE KEY block (found only: {found})")
        return None
    if len(keys) > 1:
        lines = ", ".join(str(b.line) for b in keys)
        out.error(
            file,
            _KEY_FIELD,
            f"holds {len(keys)} private key blocks (lines {lines}); exactly one is allowed",
        )
        return None
    block = keys[0]
    if block.label == "ENCRYPTED PRIVATE KEY" or any(
        (name.lower() == "proc-type" and "ENCRYPTED" in value.upper()) or name.lower() == "dek-info"
        for name, value in block.headers
    ):
        out.error(
            file,
            _KEY_FIELD,
            "the private key is encrypted; the gateway needs it unencrypted "
            "(decrypt it with `openssl pkey -in KEY -out KEY.plain`) and protect the file instead",
        )
        return None
    if block.label == "OPENSSH PRIVATE KEY":
        out.error(
            file,
            _KEY_FIELD,
            "an OpenSSH private key cannot be used for TLS; give a PEM (PKCS#8) private key",
        )
        return None
    canonical = encode_pem(block.label, block.der)
    try:
        private_key = serialization.load_pem_private_key(canonical, password=None)
    except _CRYPTO_ERRORS:
        # cryptography's message is not shown: it is not needed and may echo parser state.
        out.error(
            file,
            _KEY_FIELD,
            f"the {block.label} block (line {block.line}) is not a readable unencrypted "
            "private key",
        )
        return None
    if isinstance(private_key, dsa.DSAPrivateKey):
        out.error(file, _KEY_FIELD, f"DSA keys are not allowed; {_KEY_ADVICE}")
        return None
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_RSA_BITS:
            out.error(
                file,
                _KEY_FIELD,
                f"RSA key of {private_key.key_size} bits is too small; "
                f"at least {MIN_RSA_BITS} bits are required",
            )
            return None
        return SecretBytes(canonical), private_key
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        curve = private_key.curve.name
        if curve not in ALLOWED_CURVES:
            out.error(
                file,
                _KEY_FIELD,
                f"EC curve {curve} is not allowed; use P-256, P-384 or P-521",
            )
            return None
        return SecretBytes(canonical), private_key
    # Ed25519/Ed448 (and X25519/X448) are not accepted by common TLS clients for server
    # certificates, so the digital ID would not work as both server and client.
    kind = type(private_key).__name__.removeprefix("_").removesuffix("PrivateKey") or "unknown"
    out.error(file, _KEY_FIELD, f"unsupported key type {kind}; {_KEY_ADVICE}")
    return None


def _check_key_matches(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    leaf: _Cert,
    cert_file: str,
    key_file: str,
    out: _Findings,
) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        leaf_public = leaf.cert.public_key().public_bytes(der, spki)
    except _CRYPTO_ERRORS as exc:
        out.error(cert_file, _CERT_FIELD, f"leaf {leaf.name} has an unreadable public key: {exc}")
        return
    if key.public_key().public_bytes(der, spki) != leaf_public:
        out.error(
            key_file,
            _KEY_FIELD,
            f"the private key does not match the leaf certificate in {cert_file} "
            f"({leaf.info.subject}); give the key the certificate was issued for",
        )


# --------------------------------------------------------------------------- trust


def check_trust(
    name: str, data: bytes, *, file: str, now: datetime
) -> tuple[TrustEntry | None, list[Finding]]:
    """Validate one trust file (one or more certificates); canonical PEM in file order."""
    now = _utc(now)
    parsed = _parse_trust(name, bytes(data), file)
    if parsed.certs is None:
        return None, list(parsed.findings)
    if parsed.valid_from <= now <= parsed.valid_until:
        # Every certificate is in its validity period: what the bytes say is all there is to say.
        return parsed.entry, [*parsed.findings, *parsed.warnings]
    items = list(parsed.findings)
    dated = False
    for position, info in enumerate(parsed.certs, start=1):
        problem = _validity_problem(info, now)
        if problem:
            items.append(Finding("error", file, None, f"{_cert_name(position, info)} is {problem}"))
            dated = True
        if not info.is_ca:
            items.append(_not_a_ca(file, position, info))
    if dated or parsed.entry is None:
        return None, items
    return parsed.entry, items


def _not_a_ca(file: str, position: int, info: CertInfo) -> Finding:
    return Finding(
        "warning",
        file,
        None,
        f"{_cert_name(position, info)} is not a CA certificate: trusts this server's certificate "
        "directly (it must be replaced in the trust store whenever the server renews it)",
    )


_NEVER_FROM = datetime.max.replace(tzinfo=UTC)
_NEVER_UNTIL = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _ParsedTrust:
    """What a trust file's bytes say whatever the time: certificates, reading findings, entry."""

    certs: tuple[CertInfo, ...] | None
    findings: tuple[Finding, ...]
    entry: TrustEntry | None
    """The entry to return when no certificate is out of its validity period."""
    warnings: tuple[Finding, ...] = ()
    """The non-CA warnings, which are the same at any time."""
    valid_from: datetime = _NEVER_FROM
    valid_until: datetime = _NEVER_UNTIL
    """When every certificate is valid (an empty window when never)."""


@functools.lru_cache(maxsize=_CERT_CACHE_SIZE)
def _parse_trust(name: str, data: bytes, file: str) -> _ParsedTrust:
    # Cached by content, not by file: a Kubernetes volume or git-sync worktree rewrites every file
    # on each update, yet a daemon pass over thousands of unchanged entries must stay cheap. Only
    # the date checks depend on `now`, and check_trust redoes them on every call.
    out = _Findings()
    certs = _read_certs(data, file, None, out)
    if certs is None:
        return _ParsedTrust(None, tuple(out.items), None)
    entry = None
    if not out.has_error:
        entry = TrustEntry(
            name=name,
            pem=b"".join(c.pem for c in certs),
            certs=tuple(c.info for c in certs),
        )
    infos = tuple(c.info for c in certs)
    warnings = tuple(
        _not_a_ca(file, position, info)
        for position, info in enumerate(infos, start=1)
        if not info.is_ca
    )
    return _ParsedTrust(
        infos,
        tuple(out.items),
        entry,
        warnings,
        valid_from=max((info.not_before for info in infos), default=_NEVER_FROM),
        valid_until=min((info.not_after for info in infos), default=_NEVER_UNTIL),
    )


# --------------------------------------------------------------------------- profiles


def check_profile(
    name: str, model: ProfileFile, *, file: str, policy: PolicySection
) -> tuple[Profile | None, list[Finding]]:
    """Validate and normalise one server profile.

    The host is lowercased and kept without IPv6 brackets; the port is explicit (scheme default
    when absent); the path is "" when the URL has none, else as given (http/https only).
    """
    profile, findings = _check_profile(name, model, file, policy)
    return profile, list(findings)


@functools.lru_cache(maxsize=_CERT_CACHE_SIZE)
def _check_profile(
    name: str, model: ProfileFile, file: str, policy: PolicySection
) -> tuple[Profile | None, tuple[Finding, ...]]:
    # Cached on its (frozen, hashable) inputs: URL checks cost ~50 us a profile, and a daemon
    # pass at the benchmarks' 2,000 profiles would otherwise redo them all for one changed file.
    out = _Findings()
    scheme, location = _parse_url(model.url, file, out)
    if scheme is None:
        return None, tuple(out.items)
    # Checked even when the rest of the URL is wrong, so one run shows every mistake.
    tls = _check_encryption(scheme, model.transport_encryption, file, policy, out)
    if location is None or tls is None or out.has_error:
        return None, tuple(out.items)
    host, port, path = location
    kind: Literal["core", "smtp"] = "smtp" if scheme in ("smtp", "smtps") else "core"
    profile = Profile(name=name, kind=kind, scheme=scheme, host=host, port=port, path=path, tls=tls)
    return profile, tuple(out.items)


def _check_encryption(
    scheme: _Scheme,
    te: TransportEncryption | None,
    file: str,
    policy: PolicySection,
    out: _Findings,
) -> ProfileTls | None:
    """The profile's `tls`, recording the transport_encryption rules and clear-text findings."""
    clear: Literal["error", "warning"] = "error" if policy.require_tls_outbound else "warning"
    why_error = " (policy.require_tls_outbound is true)" if policy.require_tls_outbound else ""
    if scheme != "smtp":
        if te is not None:
            out.error(
                file,
                "transport_encryption",
                f"only allowed with smtp:// URLs, not {scheme}://; remove it "
                "(https and smtps use TLS from the first byte, http never does)",
            )
            return None
        if scheme == "http":
            out.add(clear, file, "url", f"http:// is clear text{why_error}; use https://")
            return "none"
        return "implicit"
    if te is None:
        out.error(
            file,
            "transport_encryption",
            "required for smtp:// URLs: none, starttls-optional or starttls-required "
            "(or use smtps:// for TLS from the first byte)",
        )
        return None
    if te == "none":
        out.add(
            clear,
            file,
            "transport_encryption",
            f"none sends mail in clear text{why_error}; use smtps:// or starttls-required",
        )
        return te
    if te == "starttls-optional":
        out.add(
            clear,
            file,
            "transport_encryption",
            "starttls-optional falls back to clear text when the server does not offer "
            f"STARTTLS (or an attacker strips it){why_error}; use starttls-required",
        )
    out.warning(
        file,
        "url",
        "smtps (implicit TLS) is preferred over STARTTLS; "
        "use smtps://HOST:465 if the server supports it",
    )
    return te


def _parse_url(
    url: str, file: str, out: _Findings
) -> tuple[_Scheme | None, tuple[str, int, str] | None]:
    """(scheme, (host, port, path)); None for a part that is wrong, with the reasons recorded."""
    # urlsplit silently drops tabs/newlines and strips blanks; an operator's typo must not pass.
    if _FORBIDDEN_URL_CHARS.search(url):
        out.error(file, "url", "contains a blank, control character or backslash")
        return None, None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        out.error(file, "url", f"not a valid URL: {exc}")
        return None, None
    scheme = parts.scheme.lower()
    typed = _SCHEMES.get(scheme)
    if typed is None:
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        out.error(
            file,
            "url",
            f"{shown} is not supported; write http://, https://, smtp:// or smtps:// "
            "followed by the host",
        )
        return None, None
    ok = True
    if "?" in url:
        out.error(file, "url", "a query (?...) is not allowed")
        ok = False
    if "#" in url:
        out.error(file, "url", "a fragment (#...) is not allowed")
        ok = False
    netloc = parts.netloc
    if "@" in netloc:
        # The user info may hold a password: say it is there, never what it is.
        out.error(
            file, "url", "user info (user@ or user:password@) is not allowed; put no credentials"
        )
        return typed, None
    if not url[len(parts.scheme) + 1 :].startswith("//") or not netloc:
        out.error(file, "url", f"no host: write {scheme}://HOST[:PORT]")
        return typed, None
    path = parts.path
    if path and scheme in ("smtp", "smtps"):
        out.error(file, "url", f"a path ({path!r}) is not allowed on {scheme}:// URLs")
        ok = False
    hostport = _split_host_port(netloc, scheme, file, out)
    if hostport is None or not ok:
        return typed, None
    host, port = hostport
    return typed, (host, port, path)


def _split_host_port(netloc: str, scheme: str, file: str, out: _Findings) -> tuple[str, int] | None:
    if netloc.startswith("["):
        close = netloc.find("]")
        if close < 0:
            out.error(file, "url", "an IPv6 address opened with [ is not closed with ]")
            return None
        host, rest = netloc[1:close].lower(), netloc[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            out.error(file, "url", f"[{host}] is not an IPv6 address")
            return None
        if rest and not rest.startswith(":"):
            out.error(file, "url", "unexpected text after the IPv6 address; write [ADDRESS]:PORT")
            return None
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = netloc.partition(":")
        port_text = port_text_raw if sep else None
        if ":" in port_text_raw:
            out.error(file, "url", "an IPv6 address must be in brackets: [ADDRESS]:PORT")
            return None
        host = host.lower()
        if not host:
            out.error(file, "url", f"no host: write {scheme}://HOST[:PORT]")
            return None
        if not _HOSTNAME.fullmatch(host):
            out.error(
                file,
                "url",
                f"host {host!r} is not a valid host name or IPv4 address "
                "(international names in their xn-- form)",
            )
            return None
    if port_text is None:
        return host.lower(), DEFAULT_PORTS[scheme]
    if not port_text:
        out.error(file, "url", "empty port after ':'; write HOST:PORT or leave the port out")
        return None
    if not port_text.isascii() or not port_text.isdigit():
        out.error(file, "url", f"port {port_text!r} is not a number")
        return None
    # Length first: int() of a huge digit string is slow and may raise.
    port = int(port_text) if len(port_text) <= 5 else 0
    if not 1 <= port <= 65535:
        out.error(file, "url", f"port {port_text} is out of range 1-65535")
        return None
    return host.lower(), port
