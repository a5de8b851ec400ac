"""PEM / X.509 / key / profile checks on bytes: the desired-state rules, pure and collected.

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
    CREDENTIAL_FIELDS,
    CertInfo,
    Credential,
    Finding,
    Identity,
    PolicySection,
    Profile,
    ProfileFile,
    ProfileTls,
    ProfileType,
    Server,
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
    "check_credential",
    "MAX_CREDENTIAL_BYTES",
]

WARN_DAYS = 30
"""A leaf with fewer days left than this gets a warning."""
MIN_RSA_BITS = 2048
ALLOWED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
DEFAULT_PORTS: dict[str, int] = {"http": 8008, "https": 8008, "smtp": 25, "smtps": 465}
"""Default port by scheme, as the gateway defines them: Core listens on 8008 (http or https)."""
CORE_DEFAULT_PORT = 8008
CORE_OLD_DEFAULT_PORT = 443
"""What an https:// Core profile without a port meant before the gateway's defaults applied."""
VAULT_DEFAULT_PORT = 8010
VAULT_DEFAULT_PATH = "/vault_rest"

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
# an entry is its DER key plus a small CertInfo, so even a full cache stays modest in memory.
_CERT_CACHE_SIZE = 16384

_Scheme = Literal["http", "https", "smtp", "smtps"]
_SCHEMES: dict[str, _Scheme] = {"http": "http", "https": "https", "smtp": "smtp", "smtps": "smtps"}
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_FORBIDDEN_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_TYPE_SCHEMES: dict[str, tuple[_Scheme, ...]] = {
    "smtp": ("smtp", "smtps"),
    "core": ("http", "https"),
    "vault": ("http", "https"),
}


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

    def error(self, file: str, field: str | None, reason: str, rule: str = "") -> None:
        self.items.append(Finding("error", file, field, reason, rule))

    def warning(self, file: str, field: str | None, reason: str, rule: str = "") -> None:
        self.items.append(Finding("warning", file, field, reason, rule))

    def add(
        self,
        severity: Literal["error", "warning"],
        file: str,
        field: str | None,
        reason: str,
        rule: str = "",
    ) -> None:
        self.items.append(Finding(severity, file, field, reason, rule))

    @property
    def has_error(self) -> bool:
        return any(f.severity == "error" for f in self.items)


def _read_certs(data: bytes, file: str, field: str | None, out: _Findings) -> list[_Cert] | None:
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
    cert_blocks = [b for b in blocks if b.label in _CERT_LABELS]
    others = sorted({b.label for b in blocks if b.label not in _CERT_LABELS})
    if any(label.endswith("PRIVATE KEY") for label in others):
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
    certs: list[_Cert] = []
    ok = True
    for position, block in enumerate(cert_blocks, start=1):
        decoded = _decode_cert(block, position)
        if isinstance(decoded, str):
            out.error(file, field, decoded, rule="cert-invalid")
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
    key_data: SecretBytes | None,
    *,
    cert_file: str,
    key_file: str,
    policy: PolicySection,
    now: datetime,
) -> tuple[Identity | None, list[Finding]]:
    """Validate the digital ID; an Identity only when there is no error among the findings.

    `Identity.chain` holds the certificates after the leaf (intermediates, and a root if the
    file has one), in file order. Without `key_data` (`validate --no-secrets`), every check
    but the key's runs, and there is no Identity.
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
                # Not a documented error rule (only the leaf's dates are), but clients refuse it.
                out.warning(
                    cert_file,
                    _CERT_FIELD,
                    f"{cert.name} in the chain is {problem}",
                    rule="chain-cert-validity",
                )
    key = _read_key(key_data, key_file, out) if key_data is not None else None
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
            rule="chain-order",
        )


def _check_leaf(
    leaf: _Cert, policy: PolicySection, now: datetime, file: str, out: _Findings
) -> None:
    info = leaf.info
    problem = _validity_problem(info, now)
    if problem:
        out.error(file, _CERT_FIELD, f"leaf {leaf.name} is {problem}", rule="leaf-validity")
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
                rule="leaf-min-days",
            )
        elif left < timedelta(days=WARN_DAYS):
            out.warning(
                file,
                _CERT_FIELD,
                f"leaf {leaf.name} expires on {until}, in {days} days "
                f"(fewer than {WARN_DAYS}); renew it soon",
                rule="leaf-expiring",
            )
    if info.is_ca:
        out.error(
            file,
            _CERT_FIELD,
            f"first certificate {leaf.name} is a CA certificate (basicConstraints CA:TRUE), "
            "not the gateway's own: put the gateway's leaf certificate first, then its issuers",
            rule="leaf-ca",
        )
    if info.self_signed and not policy.allow_self_signed:
        out.error(
            file,
            _CERT_FIELD,
            f"leaf {leaf.name} is self-signed, and policy.allow_self_signed is false; "
            "use a certificate issued by a CA (or allow self-signed outside production)",
            rule="leaf-self-signed",
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
            rule="leaf-eku",
        )


def _read_key(
    key_data: SecretBytes, file: str, out: _Findings
) -> tuple[SecretBytes, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] | None:
    """The canonical key PEM and the loaded key, or None with the reasons recorded."""
    try:
        blocks = parse_pem(key_data.reveal())
    except PemError as exc:
        out.error(file, _KEY_FIELD, f"not valid PEM: {exc}", rule="key-pem")
        return None
    if not blocks:
        out.error(
            file, _KEY_FIELD, "not PEM: no BEGIN line of a private key block found", rule="key-pem"
        )
        return None
    keys = [b for b in blocks if b.label.endswith("PRIVATE KEY")]
    if not keys:
        found = ", ".join(sorted({b.label for b in blocks}))
        out.error(file, _KEY_FIELD, f"no PRIVATE KEY block (found only: {found})", rule="key-pem")
        return None
    if len(keys) > 1:
        lines = ", ".join(str(b.line) for b in keys)
        out.error(
            file,
            _KEY_FIELD,
            f"holds {len(keys)} private key blocks (lines {lines}); exactly one is allowed",
            rule="key-count",
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
            rule="key-encrypted",
        )
        return None
    if block.label == "OPENSSH PRIVATE KEY":
        out.error(
            file,
            _KEY_FIELD,
            "an OpenSSH private key cannot be used for TLS; give a PEM (PKCS#8) private key",
            rule="key-openssh",
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
            rule="key-unreadable",
        )
        return None
    if isinstance(private_key, dsa.DSAPrivateKey):
        out.error(file, _KEY_FIELD, f"DSA keys are not allowed; {_KEY_ADVICE}", rule="key-type")
        return None
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_RSA_BITS:
            out.error(
                file,
                _KEY_FIELD,
                f"RSA key of {private_key.key_size} bits is too small; "
                f"at least {MIN_RSA_BITS} bits are required",
                rule="key-rsa-size",
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
                rule="key-ec-curve",
            )
            return None
        return SecretBytes(canonical), private_key
    # Ed25519/Ed448 (and X25519/X448) are not accepted by common TLS clients for server
    # certificates, so the digital ID would not work as both server and client.
    kind = type(private_key).__name__.removeprefix("_").removesuffix("PrivateKey") or "unknown"
    out.error(file, _KEY_FIELD, f"unsupported key type {kind}; {_KEY_ADVICE}", rule="key-type")
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
        out.error(
            cert_file,
            _CERT_FIELD,
            f"leaf {leaf.name} has an unreadable public key: {exc}",
            rule="leaf-public-key",
        )
        return
    if key.public_key().public_bytes(der, spki) != leaf_public:
        out.error(
            key_file,
            _KEY_FIELD,
            f"the private key does not match the leaf certificate in {cert_file} "
            f"({leaf.info.subject}); give the key the certificate was issued for",
            rule="key-mismatch",
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
            items.append(
                Finding(
                    "error",
                    file,
                    None,
                    f"{_cert_name(position, info)} is {problem}",
                    rule="trust-validity",
                )
            )
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
        rule="trust-not-ca",
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
    """Validate and normalise one server profile (the one-server `url` or the full form).

    Every server's host is lowercased and kept without IPv6 brackets; its port is explicit (the
    type's default when absent: smtp 25, smtps 465, core 8008, vault 8010); its path is "" when
    the URL has none (vault: `/vault_rest`), else as given (core and vault only). Credentials
    are not read here: see `check_credential`.
    """
    profile, findings = _check_profile(name, model, file, policy)
    return profile, list(findings)


@functools.lru_cache(maxsize=_CERT_CACHE_SIZE)
def _check_profile(
    name: str, model: ProfileFile, file: str, policy: PolicySection
) -> tuple[Profile | None, tuple[Finding, ...]]:
    # Cached on its (frozen, hashable) inputs: URL checks are not free, and a daemon
    # pass over thousands of profiles would otherwise redo them all for one changed file.
    out = _Findings()
    if model.url is not None and model.servers is not None:
        out.error(
            file,
            "servers",
            "give either url (one server) or servers (one or more), not both",
            rule="profile-servers",
        )
        return None, tuple(out.items)
    if model.url is None and model.servers is None:
        out.error(
            file,
            "url",
            'required key is missing: url = "SCHEME://HOST[:PORT]" or servers = [...] '
            "(one or more, in order of preference)",
            rule="profile-servers",
        )
        return None, tuple(out.items)
    listed = (
        [("url", model.url)]
        if model.url is not None
        else [(f"servers[{i}]", url) for i, url in enumerate(model.servers or ())]
    )
    parsed = [(field, *_parse_url(url, file, out, field)) for field, url in listed]
    kind = _profile_type(model, parsed, file, out)
    if model.mode is not None and len(listed) < 2:
        out.error(
            file,
            "mode",
            f"{model.mode} only means something with two or more servers; remove it or list "
            "more servers",
            rule="profile-servers",
        )
    _check_credential_refs(model, kind, file, out)
    smtp_fields = [field for field, scheme, _ in parsed if scheme == "smtp"]
    te = model.transport_encryption
    if te is not None and not smtp_fields and all(s is not None for _, s, _ in parsed):
        scheme = next((s for _, s, _ in parsed if s is not None), None)
        out.error(
            file,
            "transport_encryption",
            f"only allowed with smtp:// URLs, not {scheme}://; remove it "
            "(https and smtps use TLS from the first byte, http never does)",
            rule="profile-te-not-allowed",
        )
    elif te is None and smtp_fields:
        out.error(
            file,
            "transport_encryption",
            "required for smtp:// URLs: none, starttls-optional or starttls-required "
            "(or use smtps:// for TLS from the first byte)",
            rule="profile-te-missing",
        )
    servers: list[Server] = []
    seen: dict[tuple[str, int], str] = {}
    one = model.url is not None
    for field, scheme, location in parsed:
        if scheme is None or location is None or kind is None:
            continue
        host, port, path = location
        if port is None:
            port = _default_port(kind, scheme)
            if kind == "core":
                shown = _address(scheme, host, port, path)
                out.warning(
                    file,
                    field,
                    f"no port given: {shown} now uses the gateway's Core default port "
                    f"{CORE_DEFAULT_PORT} (it was {CORE_OLD_DEFAULT_PORT}); write "
                    f":{CORE_OLD_DEFAULT_PORT} if the server listens there",
                    rule="profile-core-port",
                )
        if kind == "vault" and not path:
            path = VAULT_DEFAULT_PATH
        address = _address(scheme, host, port, path)
        if (host, port) in seen:
            out.error(
                file,
                field,
                f"{address}: the same server as {seen[host, port]}",
                rule="profile-servers",
            )
            continue
        seen[host, port] = field
        tls = _server_tls(scheme, te, file, field, "" if one else f" ({address})", policy, out)
        if tls is not None:
            servers.append(Server(scheme, host, port, path, tls))
    if kind is None or out.has_error or not servers:
        return None, tuple(out.items)
    first = servers[0]
    profile = Profile(
        name=name,
        kind=kind,
        scheme=first.scheme,
        host=first.host,
        port=first.port,
        path=first.path,
        tls=first.tls,
        servers=tuple(servers),
        mode=model.mode or "failover",
    )
    return profile, tuple(out.items)


def _profile_type(
    model: ProfileFile,
    parsed: list[tuple[str, _Scheme | None, tuple[str, int | None, str] | None]],
    file: str,
    out: _Findings,
) -> ProfileType | None:
    """The profile's service type: as given, checked against every server's scheme, or implied."""
    schemes = [(field, scheme) for field, scheme, _ in parsed if scheme is not None]
    if model.type is not None:
        wanted = _TYPE_SCHEMES[model.type]
        for field, scheme in schemes:
            if scheme not in wanted:
                out.error(
                    file,
                    field,
                    f"{scheme}:// is not a {model.type} server: {model.type} profiles use "
                    + " or ".join(f"{w}://" for w in wanted),
                    rule="profile-type",
                )
        return model.type
    implied = {"smtp" if scheme in ("smtp", "smtps") else "core" for _, scheme in schemes}
    if len(implied) > 1:
        out.error(
            file,
            "servers",
            "mixes SMTP (smtp://, smtps://) and HTTP (http://, https://) servers: a profile "
            "holds servers of one type",
            rule="profile-type",
        )
        return None
    if not implied:
        return None
    return "smtp" if implied == {"smtp"} else "core"


def _check_credential_refs(
    model: ProfileFile, kind: ProfileType | None, file: str, out: _Findings
) -> None:
    """Where a credential file may be named; its content is judged by `check_credential`."""
    for field, owner in CREDENTIAL_FIELDS.items():
        path = getattr(model, field)
        if path is None:
            continue
        if kind is not None and owner != kind:
            out.error(
                file,
                field,
                f"only allowed on {owner} profiles, not on a {kind} profile",
                rule="credential-ref",
            )
        elif _FORBIDDEN_PATH_CHARS.search(path):
            out.error(file, field, "contains a control character", rule="credential-ref")
        elif not path.startswith("/"):
            out.error(
                file,
                field,
                "must be an absolute path inside one of key_dirs (a mounted secret); a "
                "credential never lives in the desired state",
                rule="credential-ref",
            )


MAX_CREDENTIAL_BYTES = 4096
"""A password or API key file larger than this is an error (a mistake, not a credential)."""


def check_credential(
    field: str, source: str, data: SecretBytes, *, file: str
) -> tuple[Credential | None, list[Finding]]:
    """A credential file's content (already read from key_dirs): not empty, not over the limit.

    Findings name the profile file and the field, never the value.
    """
    out = _Findings()
    value = data.reveal()
    if not value.strip():
        out.error(file, field, f"{source}: the credential file is empty", rule="credential-file")
    elif len(value) > MAX_CREDENTIAL_BYTES:
        out.error(
            file,
            field,
            f"{source}: {len(value)} bytes: over the {MAX_CREDENTIAL_BYTES}-byte limit for a "
            "credential",
            rule="credential-file",
        )
    if out.has_error:
        return None, out.items
    assert field in ("password_file", "api_key_file")
    return Credential(field, source, data), out.items  # type: ignore[arg-type]


def _default_port(kind: ProfileType, scheme: _Scheme) -> int:
    if kind == "vault":
        return VAULT_DEFAULT_PORT
    return DEFAULT_PORTS[scheme]


def _address(scheme: str, host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}{path}"


def _server_tls(
    scheme: _Scheme,
    te: TransportEncryption | None,
    file: str,
    field: str,
    server: str,
    policy: PolicySection,
    out: _Findings,
) -> ProfileTls | None:
    """One server's `tls`, recording its clear-text findings; `server` names it in the full form."""
    clear: Literal["error", "warning"] = "error" if policy.require_tls_outbound else "warning"
    why_error = " (policy.require_tls_outbound is true)" if policy.require_tls_outbound else ""
    if scheme != "smtp":
        if scheme == "http":
            out.add(
                clear,
                file,
                field,
                f"http:// is clear text{why_error}; use https://{server}",
                rule="profile-cleartext",
            )
            return "none"
        return "implicit"
    if te is None:
        return None  # reported once for the profile
    if te == "none":
        out.add(
            clear,
            file,
            "transport_encryption",
            f"none sends mail in clear text{why_error}; use smtps:// or starttls-required{server}",
            rule="profile-cleartext",
        )
        return te
    if te == "starttls-optional":
        out.add(
            clear,
            file,
            "transport_encryption",
            "starttls-optional falls back to clear text when the server does not offer "
            f"STARTTLS (or an attacker strips it){why_error}; use starttls-required{server}",
            rule="profile-cleartext",
        )
    out.warning(
        file,
        field,
        "smtps (implicit TLS) is preferred over STARTTLS; "
        f"use smtps://HOST:465 if the server supports it{server}",
        rule="profile-starttls",
    )
    return te


def _parse_url(
    url: str, file: str, out: _Findings, field: str = "url"
) -> tuple[_Scheme | None, tuple[str, int | None, str] | None]:
    """(scheme, (host, port or None when absent, path)); None for a part that is wrong, with the
    reasons recorded under `field`."""
    # urlsplit silently drops tabs/newlines and strips blanks; an operator's typo must not pass.
    if _FORBIDDEN_URL_CHARS.search(url):
        out.error(
            file, field, "contains a blank, control character or backslash", rule="profile-url"
        )
        return None, None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        out.error(file, field, f"not a valid URL: {exc}", rule="profile-url")
        return None, None
    scheme = parts.scheme.lower()
    typed = _SCHEMES.get(scheme)
    if typed is None:
        shown = f"scheme {scheme!r}" if scheme else "no scheme"
        out.error(
            file,
            field,
            f"{shown} is not supported; write http://, https://, smtp:// or smtps:// "
            "followed by the host",
            rule="profile-url",
        )
        return None, None
    ok = True
    if "?" in url:
        out.error(file, field, "a query (?...) is not allowed", rule="profile-url")
        ok = False
    if "#" in url:
        out.error(file, field, "a fragment (#...) is not allowed", rule="profile-url")
        ok = False
    netloc = parts.netloc
    if "@" in netloc:
        # The user info may hold a password: say it is there, never what it is.
        out.error(
            file,
            field,
            "user info (user@ or user:password@) is not allowed; put no credentials",
            rule="profile-url",
        )
        return typed, None
    if not url[len(parts.scheme) + 1 :].startswith("//") or not netloc:
        out.error(file, field, f"no host: write {scheme}://HOST[:PORT]", rule="profile-url")
        return typed, None
    path = parts.path
    if path and scheme in ("smtp", "smtps"):
        out.error(
            file, field, f"a path ({path!r}) is not allowed on {scheme}:// URLs", rule="profile-url"
        )
        ok = False
    hostport = _split_host_port(netloc, scheme, file, out, field)
    if hostport is None or not ok:
        return typed, None
    host, port = hostport
    return typed, (host, port, path)


def _split_host_port(
    netloc: str, scheme: str, file: str, out: _Findings, field: str
) -> tuple[str, int | None] | None:
    if netloc.startswith("["):
        close = netloc.find("]")
        if close < 0:
            out.error(
                file,
                field,
                "an IPv6 address opened with [ is not closed with ]",
                rule="profile-url",
            )
            return None
        host, rest = netloc[1:close].lower(), netloc[close + 1 :]
        if "%" in host:
            out.error(
                file,
                field,
                f"[{host}] has a zone (%...): write the IPv6 address without it (a zone is "
                "local to one host's interfaces)",
                rule="profile-url",
            )
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            out.error(file, field, f"[{host}] is not an IPv6 address", rule="profile-url")
            return None
        if rest and not rest.startswith(":"):
            out.error(
                file,
                field,
                "unexpected text after the IPv6 address; write [ADDRESS]:PORT",
                rule="profile-url",
            )
            return None
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = netloc.partition(":")
        port_text = port_text_raw if sep else None
        if ":" in port_text_raw:
            out.error(
                file,
                field,
                "an IPv6 address must be in brackets: [ADDRESS]:PORT",
                rule="profile-url",
            )
            return None
        host = host.lower()
        if not host:
            out.error(file, field, f"no host: write {scheme}://HOST[:PORT]", rule="profile-url")
            return None
        if not _HOSTNAME.fullmatch(host):
            out.error(
                file,
                field,
                f"host {host!r} is not a valid host name or IPv4 address "
                "(international names in their xn-- form)",
                rule="profile-url",
            )
            return None
        # A name whose last label is a number is meant as an IPv4 literal (no top-level domain
        # is numeric): it must then be one, four numbers 0-255 (999.999.999.999 is neither).
        if host.rstrip(".").rpartition(".")[2].isdigit() and not _is_ipv4(host):
            out.error(
                file,
                field,
                f"host {host!r} is not a valid IPv4 address: four numbers from 0 to 255, "
                "separated by dots",
                rule="profile-url",
            )
            return None
    if port_text is None:
        return host.lower(), None
    if not port_text:
        out.error(
            file,
            field,
            "empty port after ':'; write HOST:PORT or leave the port out",
            rule="profile-url",
        )
        return None
    if not port_text.isascii() or not port_text.isdigit():
        out.error(file, field, f"port {port_text!r} is not a number", rule="profile-url")
        return None
    # Length first: int() of a huge digit string is slow and may raise.
    port = int(port_text) if len(port_text) <= 5 else 0
    if not 1 <= port <= 65535:
        out.error(file, field, f"port {port_text} is out of range 1-65535", rule="profile-url")
        return None
    return host.lower(), port


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
