"""Desired-state models: the TOML files as pydantic models (extra=forbid), and the frozen result."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.core.secret import SecretBytes

Kind = Literal["identity", "console", "smtp_inbound", "trust", "profiles"]
KINDS: tuple[Kind, ...] = ("identity", "console", "smtp_inbound", "trust", "profiles")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_FILE_BYTES = 1024 * 1024

TlsPolicy = Literal["modern", "intermediate", "old"]
InboundTls = Literal["off", "optional", "required"]
TransportEncryption = Literal["none", "starttls-optional", "starttls-required"]
ProfileTls = Literal["none", "implicit", "starttls-optional", "starttls-required"]


class _TomlModel(BaseModel):
    # strict: TOML has real types, so "true" for a boolean is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IdentitySection(_TomlModel):
    """`[identity]`: where the digital ID's certificate chain and private key are."""

    cert: Annotated[str, Field(min_length=1)]
    """Relative path in STATE: leaf first, then intermediates in issuing order."""
    key: Annotated[str, Field(min_length=1)]
    """Relative path in STATE, or an absolute path inside a `key_dirs` entry."""


class ConsoleSection(_TomlModel):
    """`[console]`: the web console's HTTPS."""

    https: bool = False
    tls_policy: TlsPolicy = "intermediate"


class SmtpInboundSection(_TomlModel):
    """`[smtp_inbound]`: STARTTLS on inbound SMTP."""

    tls: InboundTls = "off"


class PolicySection(_TomlModel):
    """`[policy]`: what the validator demands of the identity and profiles."""

    allow_self_signed: bool = False
    min_days_valid: Annotated[int, Field(ge=0, le=3650)] = 7
    require_tls_outbound: bool = False


class GatewayFile(_TomlModel):
    """`gateway.toml`."""

    identity: IdentitySection | None = None
    console: ConsoleSection = ConsoleSection()
    smtp_inbound: SmtpInboundSection = SmtpInboundSection()
    policy: PolicySection = PolicySection()


class ProfileFile(_TomlModel):
    """`profiles/NAME.toml`: one outbound server."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    transport_encryption: TransportEncryption | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One validation result: an error rejects the state, a warning is printed and audited."""

    severity: Literal["error", "warning"]
    file: str
    """Relative to STATE (or the absolute key path inside key_dirs)."""
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{self.severity}: {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What operators and auditors need to know about one certificate."""

    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str
    is_ca: bool
    self_signed: bool


@dataclass(frozen=True, slots=True)
class Identity:
    """A validated digital ID: canonical PEM of the chain and of the key."""

    cert_pem: bytes
    """Leaf then intermediates, each re-encoded from DER (canonical)."""
    key_pem: SecretBytes
    """The key's PEM block, canonical line endings."""
    leaf: CertInfo
    chain: tuple[CertInfo, ...]


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """One trust file: NAME and its certificates as canonical PEM."""

    name: str
    pem: bytes
    certs: tuple[CertInfo, ...]


@dataclass(frozen=True, slots=True)
class Profile:
    """One outbound server profile, normalised."""

    name: str
    kind: Literal["core", "smtp"]
    scheme: Literal["http", "https", "smtp", "smtps"]
    host: str
    port: int
    path: str
    tls: ProfileTls


@dataclass(frozen=True, slots=True)
class DesiredState:
    """A validated desired state: everything rendering needs, nothing read from disk."""

    revision: str
    gateway: GatewayFile
    identity: Identity | None
    trust: tuple[TrustEntry, ...]
    profiles: tuple[Profile, ...]
    warnings: tuple[Finding, ...] = ()
