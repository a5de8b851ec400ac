"""Desired states built by hand, for the renderer's and the planner's tests (no loader involved)."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.core.desired import (
    CertInfo,
    ConsoleSection,
    DesiredState,
    GatewayFile,
    Identity,
    InboundTls,
    Profile,
    SmtpInboundSection,
    TlsPolicy,
    TrustEntry,
)
from reconciler.core.secret import SecretBytes
from reconciler.support import devpki


def cert_info(name: str, *, is_ca: bool = False) -> CertInfo:
    """Dummy metadata: render copies CertInfo through and never looks inside."""
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    return CertInfo(
        subject=f"CN={name}",
        issuer="CN=Test CA",
        serial="01",
        not_before=moment,
        not_after=moment,
        sha256_fingerprint="00" * 32,
        is_ca=is_ca,
        self_signed=False,
    )


def make_identity(key_type: devpki.KeyType = "ec256") -> Identity:
    root = devpki.make_ca("Render Root CA")
    intermediate = devpki.make_ca("Render Intermediate CA", issuer=root)
    leaf = devpki.issue(intermediate, "gateway.test", key_type=key_type)
    return Identity(
        cert_pem=leaf.cert_pem + intermediate.cert_pem,
        key_pem=SecretBytes(leaf.key_pem),
        leaf=cert_info("gateway.test"),
        chain=(cert_info("Render Intermediate CA", is_ca=True),),
    )


PROFILES: tuple[Profile, ...] = (
    Profile("relay", "smtp", "smtp", "relay.example.com", 25, "", "starttls-required"),
    Profile("core-eu", "core", "https", "core.example.com", 443, "/api", "implicit"),
    Profile("archive", "smtp", "smtps", "archive.example.com", 465, "", "implicit"),
    Profile("legacy", "core", "http", "legacy.example.com", 8080, "/", "none"),
    Profile("backup-mx", "smtp", "smtp", "mx2.example.com", 2525, "", "starttls-optional"),
)


def desired_state(
    identity: Identity | None,
    *,
    https: bool = True,
    tls_policy: TlsPolicy = "intermediate",
    inbound: InboundTls = "optional",
    trust: tuple[TrustEntry, ...] = (),
    profiles: tuple[Profile, ...] = PROFILES,
) -> DesiredState:
    return DesiredState(
        revision="sha256:" + "ab" * 32,
        gateway=GatewayFile(
            console=ConsoleSection(https=https, tls_policy=tls_policy),
            smtp_inbound=SmtpInboundSection(tls=inbound),
        ),
        identity=identity,
        trust=trust,
        profiles=profiles,
    )
