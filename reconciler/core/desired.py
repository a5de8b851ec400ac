"""Desired-state models: the TOML files' tables and their rules, and the frozen validated result."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, get_args

from reconciler.core.secret import SecretBytes
from reconciler.core.timefmt import rfc3339

Kind = Literal["identity", "console", "smtp_inbound", "trust", "profiles"]
KINDS: tuple[Kind, ...] = get_args(Kind)
"""Every kind, in the one order hooks, plans and records list them."""

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_FILE_BYTES = 1024 * 1024

TlsPolicy = Literal["modern", "intermediate", "old"]
InboundTls = Literal["off", "optional", "required"]
TransportEncryption = Literal["none", "starttls-optional", "starttls-required"]
ProfileTls = Literal["none", "implicit", "starttls-optional", "starttls-required"]
ProfileType = Literal["smtp", "core", "vault"]
Scheme = Literal["http", "https", "smtp", "smtps"]
ProfileMode = Literal["failover", "round-robin"]
CREDENTIAL_FIELDS: dict[str, ProfileType] = {"password_file": "smtp", "api_key_file": "vault"}
"""The credential keys of a profile file, and the one type each belongs to."""


@dataclass(frozen=True, slots=True)
class Rule:
    """What one key of a TOML table must hold. TOML has real types, so a value of another type is
    an error even where it could be converted ("true" for a boolean, 1 for true, 7.0 for 7)."""

    type: type
    """bool, int, str, list (of strings), or a section class (a nested table)."""
    required: bool = False
    choices: tuple[str, ...] = ()
    min_length: int | None = None
    max_length: int | None = None
    ge: int | None = None
    le: int | None = None
    max_items: int | None = None
    """For a list: at most this many items (each a str, checked against the string rules)."""


class Section:
    """A TOML table checked against `RULES` (see `core.schema.check_table`); unknown keys are
    errors. Subclasses are frozen dataclasses whose fields are the keys, defaults included."""

    __slots__ = ()
    RULES: ClassVar[dict[str, Rule]] = {}
    SCHEMA_EXTRA: ClassVar[dict[str, object]] = {}
    """Keywords added to the JSON Schema (rules over several keys)."""


_JSON_TYPES = {bool: "boolean", int: "integer", str: "string", list: "array"}


def json_schema(model: type[Section]) -> dict[str, object]:
    """The JSON Schema of a TOML file or table, from its rules (what `reconciler schema` prints)."""
    defaults = {f.name: f.default for f in dataclasses.fields(model)}  # type: ignore[arg-type]
    properties: dict[str, object] = {}
    for name, rule in model.RULES.items():
        prop: dict[str, object]
        if issubclass(rule.type, Section):
            prop = json_schema(rule.type)
        elif rule.type is list:
            item: dict[str, object] = {"type": "string"}
            if rule.min_length is not None:
                item["minLength"] = rule.min_length
            if rule.max_length is not None:
                item["maxLength"] = rule.max_length
            prop = {"type": "array", "items": item, "minItems": 1}
            if rule.max_items is not None:
                prop["maxItems"] = rule.max_items
        else:
            prop = {"type": _JSON_TYPES[rule.type]}
            if defaults.get(name, dataclasses.MISSING) not in (dataclasses.MISSING, None):
                prop["default"] = defaults[name]
        if rule.choices:
            prop["enum"] = list(rule.choices)
        for keyword, value in (
            ("minLength", rule.min_length if rule.type is not list else None),
            ("maxLength", rule.max_length if rule.type is not list else None),
            ("minimum", rule.ge),
            ("maximum", rule.le),
        ):
            if value is not None:
                prop[keyword] = value
        properties[name] = prop
    schema: dict[str, object] = {
        "title": model.__name__,
        "description": (model.__doc__ or "").strip().splitlines()[0],
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = [name for name, rule in model.RULES.items() if rule.required]
    if required:
        schema["required"] = required
    schema.update(model.SCHEMA_EXTRA)
    return schema


@dataclass(frozen=True, slots=True)
class IdentitySection(Section):
    """`[identity]`: where the digital ID's certificate chain and private key are."""

    cert: str
    """Relative path in STATE, or an absolute path inside a `key_dirs` entry (a TLS Secret):
    leaf first, then intermediates in issuing order."""
    key: str
    """Relative path in STATE, or an absolute path inside a `key_dirs` entry."""

    RULES: ClassVar[dict[str, Rule]] = {
        "cert": Rule(str, required=True, min_length=1),
        "key": Rule(str, required=True, min_length=1),
    }


@dataclass(frozen=True, slots=True)
class ConsoleSection(Section):
    """`[console]`: the web console's HTTPS."""

    https: bool = False
    tls_policy: TlsPolicy = "intermediate"

    RULES: ClassVar[dict[str, Rule]] = {
        "https": Rule(bool),
        "tls_policy": Rule(str, choices=("modern", "intermediate", "old")),
    }


@dataclass(frozen=True, slots=True)
class SmtpInboundSection(Section):
    """`[smtp_inbound]`: STARTTLS on inbound SMTP."""

    tls: InboundTls = "off"

    RULES: ClassVar[dict[str, Rule]] = {
        "tls": Rule(str, choices=("off", "optional", "required")),
    }


@dataclass(frozen=True, slots=True)
class PolicySection(Section):
    """`[policy]`: what the validator demands of the identity and profiles."""

    allow_self_signed: bool = False
    min_days_valid: int = 7
    require_tls_outbound: bool = False

    RULES: ClassVar[dict[str, Rule]] = {
        "allow_self_signed": Rule(bool),
        "min_days_valid": Rule(int, ge=0, le=3650),
        "require_tls_outbound": Rule(bool),
    }


@dataclass(frozen=True, slots=True)
class GatewayFile(Section):
    """`gateway.toml`."""

    identity: IdentitySection | None = None
    console: ConsoleSection = ConsoleSection()
    smtp_inbound: SmtpInboundSection = SmtpInboundSection()
    policy: PolicySection = PolicySection()

    RULES: ClassVar[dict[str, Rule]] = {
        "identity": Rule(IdentitySection),
        "console": Rule(ConsoleSection),
        "smtp_inbound": Rule(SmtpInboundSection),
        "policy": Rule(PolicySection),
    }


MAX_SERVERS = 32


@dataclass(frozen=True, slots=True)
class ProfileFile(Section):
    """`profiles/NAME.toml`: a server profile, one or more servers of one service type."""

    url: str | None = None
    """The one-server shorthand; exactly one of `url` and `servers` is given."""
    type: ProfileType | None = None
    servers: tuple[str, ...] | None = None
    mode: ProfileMode | None = None
    transport_encryption: TransportEncryption | None = None
    password_file: str | None = None
    api_key_file: str | None = None

    RULES: ClassVar[dict[str, Rule]] = {
        "url": Rule(str, min_length=1, max_length=2048),
        "type": Rule(str, choices=("smtp", "core", "vault")),
        "servers": Rule(list, min_length=1, max_length=2048, max_items=MAX_SERVERS),
        "mode": Rule(str, choices=("failover", "round-robin")),
        "transport_encryption": Rule(
            str, choices=("none", "starttls-optional", "starttls-required")
        ),
        "password_file": Rule(str, min_length=1, max_length=4096),
        "api_key_file": Rule(str, min_length=1, max_length=4096),
    }
    SCHEMA_EXTRA: ClassVar[dict[str, object]] = {
        "oneOf": [{"required": ["url"]}, {"required": ["servers"]}]
    }

    @property
    def secret_files(self) -> tuple[tuple[str, str], ...]:
        """(field, path) of each credential file named: secrets, read from key_dirs only."""
        named = (("password_file", self.password_file), ("api_key_file", self.api_key_file))
        return tuple((name, path) for name, path in named if path is not None)


@dataclass(frozen=True, slots=True)
class Finding:
    """One validation result: an error rejects the state, a warning is printed and audited."""

    severity: Literal["error", "warning"]
    file: str
    """Relative to STATE (or the absolute key path inside key_dirs)."""
    field: str | None
    reason: str
    rule: str = ""
    """Stable rule id (`reconciler/core/rules.py`, docs/rules.md)."""
    line: int | None = None
    """1-based line in `file` where known (a TOML key, a PEM block's BEGIN line)."""
    col: int | None = None
    """1-based column where known."""

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

    def fields(self) -> dict[str, str]:
        """The fields records and reports show for this certificate, the same everywhere."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_after": rfc3339(self.not_after),
            "sha256_fingerprint": self.sha256_fingerprint,
        }


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
class Server:
    """One server of a profile, normalised: explicit port (the type's default when absent)."""

    scheme: Scheme
    host: str
    """Lowercased; an IPv6 literal without its brackets."""
    port: int
    path: str
    tls: ProfileTls


@dataclass(frozen=True, slots=True)
class Credential:
    """A profile's sensitive value, read from a file inside key_dirs; its bytes stay opaque."""

    field: Literal["password_file", "api_key_file"]
    source: str
    """The absolute path the profile names (inside key_dirs): a reference, not a secret."""
    value: SecretBytes = dataclasses.field(repr=False)

    @property
    def suffix(self) -> str:
        """The managed copy's file name suffix: NAME.password or NAME.api_key."""
        return "password" if self.field == "password_file" else "api_key"


@dataclass(frozen=True, slots=True)
class Profile:
    """One outbound server profile, normalised. The first server's fields are repeated at the
    top level (`scheme`, `host`, ...): readers of the one-server form keep working."""

    name: str
    kind: ProfileType
    scheme: Scheme
    host: str
    port: int
    path: str
    tls: ProfileTls
    servers: tuple[Server, ...] = ()
    mode: ProfileMode = "failover"
    credentials: tuple[Credential, ...] = ()

    @property
    def all_servers(self) -> tuple[Server, ...]:
        """The servers in order (a Profile built with the top-level fields only has one)."""
        if self.servers:
            return self.servers
        return (Server(self.scheme, self.host, self.port, self.path, self.tls),)

    @property
    def secret_files(self) -> tuple[tuple[str, str], ...]:
        """(field, absolute path) of every credential file the profile refers to: what a
        check without secrets (`validate --no-secrets`) must treat like the private key."""
        return tuple((c.field, c.source) for c in self.credentials)


@dataclass(frozen=True, slots=True)
class DesiredState:
    """A validated desired state: everything rendering needs, nothing read from disk."""

    revision: str
    gateway: GatewayFile
    identity: Identity | None
    trust: tuple[TrustEntry, ...]
    profiles: tuple[Profile, ...]
    warnings: tuple[Finding, ...] = ()
