"""The digital ID: its chain in issuing order, its leaf against [policy], its key matching."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from reconciler.core.certificates import (
    CRYPTO_ERRORS,
    DecodedCert,
    as_utc,
    read_certs,
    signed_by,
    validity_problem,
)
from reconciler.core.collect import Findings
from reconciler.core.desired import Finding, Identity, PolicySection
from reconciler.core.private_key import KEY_FIELD, read_key
from reconciler.core.secret import SecretBytes
from reconciler.core.timefmt import rfc3339

WARN_DAYS = 30
"""A leaf with fewer days left than this gets a warning."""
CERT_FIELD = "identity.cert"


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
    now = as_utc(now)
    out = Findings()
    certs = read_certs(cert_data, cert_file, CERT_FIELD, out)
    if certs:
        _check_chain_order(certs, cert_file, out)
        _check_leaf(certs[0], policy, now, cert_file, out)
        for cert in certs[1:]:
            problem = validity_problem(cert.info, now)
            if problem:
                # Not a documented error rule (only the leaf's dates are), but clients refuse it.
                out.warning(
                    cert_file,
                    CERT_FIELD,
                    f"{cert.name} in the chain is {problem}",
                    rule="chain-cert-validity",
                )
    key = read_key(key_data, key_file, out) if key_data is not None else None
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


def _check_chain_order(certs: list[DecodedCert], file: str, out: Findings) -> None:
    for child, parent in itertools.pairwise(certs):
        if signed_by(child.cert, parent.cert):
            continue
        how = (
            "its issuer name differs from that subject"
            if child.cert.issuer != parent.cert.subject
            else "the signature does not verify with that certificate's key"
        )
        out.error(
            file,
            CERT_FIELD,
            f"chain not in issuing order: {child.name} is not issued by the next, "
            f"{parent.name} ({how}); put the leaf first, then each issuer in order",
            rule="chain-order",
        )


def _check_leaf(
    leaf: DecodedCert, policy: PolicySection, now: datetime, file: str, out: Findings
) -> None:
    info = leaf.info
    problem = validity_problem(info, now)
    if problem:
        out.error(file, CERT_FIELD, f"leaf {leaf.name} is {problem}", rule="leaf-validity")
    else:
        left = info.not_after - now
        days = left.days
        until = rfc3339(info.not_after)
        if left < timedelta(days=policy.min_days_valid):
            out.error(
                file,
                CERT_FIELD,
                f"leaf {leaf.name} expires on {until}, in {days} days: fewer than "
                f"policy.min_days_valid = {policy.min_days_valid}; renew it",
                rule="leaf-min-days",
            )
        elif left < timedelta(days=WARN_DAYS):
            out.warning(
                file,
                CERT_FIELD,
                f"leaf {leaf.name} expires on {until}, in {days} days "
                f"(fewer than {WARN_DAYS}); renew it soon",
                rule="leaf-expiring",
            )
    if info.is_ca:
        out.error(
            file,
            CERT_FIELD,
            f"first certificate {leaf.name} is a CA certificate (basicConstraints CA:TRUE), "
            "not the gateway's own: put the gateway's leaf certificate first, then its issuers",
            rule="leaf-ca",
        )
    if info.self_signed and not policy.allow_self_signed:
        out.error(
            file,
            CERT_FIELD,
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
            CERT_FIELD,
            f"leaf {leaf.name} has an Extended Key Usage without {' and '.join(missing)}; "
            "the digital ID is used as a TLS server and as a TLS client, so peers may refuse it",
            rule="leaf-eku",
        )


def _check_key_matches(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    leaf: DecodedCert,
    cert_file: str,
    key_file: str,
    out: Findings,
) -> None:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        leaf_public = leaf.cert.public_key().public_bytes(der, spki)
    except CRYPTO_ERRORS as exc:
        out.error(
            cert_file,
            CERT_FIELD,
            f"leaf {leaf.name} has an unreadable public key: {exc}",
            rule="leaf-public-key",
        )
        return
    if key.public_key().public_bytes(der, spki) != leaf_public:
        out.error(
            key_file,
            KEY_FIELD,
            f"the private key does not match the leaf certificate in {cert_file} "
            f"({leaf.info.subject}); give the key the certificate was issued for",
            rule="key-mismatch",
        )
