"""Desired state from bytes: TOML parsing, model checks and every validation rule, collected."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from reconciler.core.desired import (
    DesiredState,
    Finding,
    GatewayFile,
    Identity,
    PolicySection,
    Profile,
    ProfileFile,
    TrustEntry,
)
from reconciler.core.secret import SecretBytes
from reconciler.core.validate import check_identity, check_profile, check_trust

GATEWAY_FILE = "gateway.toml"

ModelT = TypeVar("ModelT", bound=BaseModel)

# Every pass re-reads every profile, and a Kubernetes volume or git-sync worktree rewrites them all
# on each update, so parses are cached by content (and file name: findings name it). Bounded in
# count, and only small files are kept (a profile is two keys), so that a state of huge files
# cannot make the cache hold more than a few tens of MiB.
_PARSE_CACHE_SIZE = 8192
_PARSE_CACHE_MAX_BYTES = 4096


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input file as read from a snapshot; `data` is None when it could not be read."""

    path: str
    """Relative to STATE (or absolute inside key_dirs), as messages show it."""
    data: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeySource:
    """The identity key file; its bytes stay opaque."""

    path: str
    data: SecretBytes | None


@dataclass(frozen=True, slots=True)
class StateInput:
    """Everything one pass read from STATE, as bytes: the only input of `evaluate`."""

    revision: str
    gateway: SourceFile | None
    cert: SourceFile | None = None
    key: KeySource | None = None
    trust: tuple[tuple[str, SourceFile], ...] = ()
    profiles: tuple[tuple[str, SourceFile], ...] = ()
    findings: tuple[Finding, ...] = ()
    """What reading found: missing or oversized files, path escapes, unexpected names."""
    in_transit: bool = False
    """The state kept changing under the reader: not invalid, just not readable yet."""
    content_digest: str = ""
    """sha256 of every input read (the revision of a git STATE does not see key_dirs)."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on a StateInput: a DesiredState only when there is no error."""

    desired: DesiredState | None
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")


def error(file: str, field_name: str | None, reason: str) -> Finding:
    return Finding("error", file, field_name, reason)


def parse_toml(data: bytes, file: str, model: type[ModelT]) -> tuple[ModelT | None, list[Finding]]:
    """Bytes to a model: UTF-8, TOML syntax, then types, values and unknown keys, all collected.

    The findings are a new list on every call; the model may be shared with earlier calls on the
    same bytes when it is frozen (all desired-state models are), so nobody can change it.
    """
    if len(data) > _PARSE_CACHE_MAX_BYTES or not model.model_config.get("frozen"):
        parsed, findings = _parse_toml(data, file, model)
    else:
        parsed, findings = _parse_toml_cached(data, file, model)
    return cast("ModelT | None", parsed), list(findings)


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _parse_toml_cached(
    data: bytes, file: str, model: type[BaseModel]
) -> tuple[BaseModel | None, tuple[Finding, ...]]:
    return _parse_toml(data, file, model)


def _parse_toml(
    data: bytes, file: str, model: type[BaseModel]
) -> tuple[BaseModel | None, tuple[Finding, ...]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (error(file, None, f"not UTF-8 text (byte {exc.start})"),)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, (error(file, None, f"TOML syntax error: {exc}"),)
    try:
        return model.model_validate(raw), ()
    except ValidationError as exc:
        return None, tuple(_model_finding(file, err) for err in exc.errors())


def _model_finding(file: str, err: Any) -> Finding:
    where = ".".join(str(part) for part in err["loc"]) or None
    kind = err["type"]
    if kind == "extra_forbidden":
        reason = "unknown key (typo?)"
    elif kind == "missing":
        reason = "required key is missing"
    elif kind == "literal_error":
        reason = f"{err['msg'].lower()}, got {err['input']!r}"
    else:
        reason = f"{err['msg']}, got {err['input']!r}" if "input" in err else err["msg"]
    return error(file, where, reason)


def evaluate(inp: StateInput, now: datetime) -> Evaluation:
    """Validate a snapshot's bytes against every SPEC section 2 rule; collect all findings."""
    findings: list[Finding] = list(inp.findings)
    gateway: GatewayFile | None = None
    if inp.gateway is None:
        findings.append(error(GATEWAY_FILE, None, "required file is missing"))
    elif inp.gateway.data is not None:
        gateway, found = parse_toml(inp.gateway.data, inp.gateway.path, GatewayFile)
        findings += found
    # A gateway.toml with a typo elsewhere still has its [policy] honoured for the other checks,
    # so one run reports every error (a broken key is not hidden behind a [console] typo).
    policy = gateway.policy if gateway is not None else _policy_alone(inp.gateway)

    identity: Identity | None = None
    if gateway is not None and gateway.identity is not None:
        errors_before = _error_count(findings)
        identity = _identity(inp, policy, now, findings)
        if identity is None and _error_count(findings) == errors_before:
            findings.append(error(GATEWAY_FILE, "identity", "the identity files were not read"))
    elif gateway is None and inp.cert is not None and inp.key is not None:
        _identity(inp, policy, now, findings)
    if gateway is not None and gateway.identity is None:
        if gateway.console.https:
            findings.append(error(GATEWAY_FILE, "console.https", "HTTPS needs an [identity]"))
        if gateway.smtp_inbound.tls != "off":
            findings.append(
                error(GATEWAY_FILE, "smtp_inbound.tls", "inbound STARTTLS needs an [identity]")
            )

    trust = list(_trust(inp.trust, now, findings))
    profiles = list(_profiles(inp.profiles, policy, findings))
    ordered = tuple(sorted(findings, key=lambda f: (f.severity != "error", f.file, f.field or "")))
    if gateway is None or any(f.severity == "error" for f in ordered):
        return Evaluation(None, ordered)
    desired = DesiredState(
        revision=inp.revision,
        gateway=gateway,
        identity=identity,
        trust=tuple(sorted(trust, key=lambda t: t.name)),
        profiles=tuple(sorted(profiles, key=lambda p: p.name)),
        warnings=tuple(f for f in ordered if f.severity == "warning"),
    )
    return Evaluation(desired, ordered)


def _error_count(findings: list[Finding]) -> int:
    return sum(1 for f in findings if f.severity == "error")


def _policy_alone(source: SourceFile | None) -> PolicySection:
    """[policy] of a gateway.toml that failed as a whole, or the defaults."""
    if source is None or source.data is None:
        return PolicySection()
    try:
        raw = tomllib.loads(source.data.decode("utf-8"))
        return PolicySection.model_validate(raw.get("policy", {}))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValidationError):
        return PolicySection()


def _identity(
    inp: StateInput, policy: PolicySection, now: datetime, findings: list[Finding]
) -> Identity | None:
    if inp.cert is None or inp.key is None:
        return None  # the snapshot already reported why
    if inp.cert.data is None or inp.key.data is None:
        return None
    identity, found = check_identity(
        inp.cert.data,
        inp.key.data,
        cert_file=inp.cert.path,
        key_file=inp.key.path,
        policy=policy,
        now=now,
    )
    findings += found
    return identity


def _trust(
    sources: Iterable[tuple[str, SourceFile]], now: datetime, findings: list[Finding]
) -> Iterable[TrustEntry]:
    for name, source in sources:
        if source.data is None:
            continue
        entry, found = check_trust(name, source.data, file=source.path, now=now)
        findings += found
        if entry is not None:
            yield entry


def _profiles(
    sources: Iterable[tuple[str, SourceFile]], policy: PolicySection, findings: list[Finding]
) -> Iterable[Profile]:
    for name, source in sources:
        if source.data is None:
            continue
        model, found = parse_toml(source.data, source.path, ProfileFile)
        findings += found
        if model is None:
            continue
        profile, found = check_profile(name, model, file=source.path, policy=policy)
        findings += found
        if profile is not None:
            yield profile
