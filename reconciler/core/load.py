"""Desired state from bytes: TOML parsing, model checks and every validation rule, collected."""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar, cast

from reconciler.core.desired import (
    Credential,
    DesiredState,
    Finding,
    GatewayFile,
    Identity,
    PolicySection,
    Profile,
    ProfileFile,
    Rule,
    Section,
    TrustEntry,
)
from reconciler.core.secret import SecretBytes
from reconciler.core.validate import (
    check_credential,
    check_identity,
    check_profile,
    check_trust,
)

GATEWAY_FILE = "gateway.toml"

ModelT = TypeVar("ModelT", bound=Section)

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
class Skipped:
    """A secret reference left unread (`validate --no-secrets`) and the rules not run on it."""

    field: str
    path: str
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StateInput:
    """Everything one pass read from STATE, as bytes: the only input of `evaluate`."""

    revision: str
    gateway: SourceFile | None
    cert: SourceFile | None = None
    key: KeySource | None = None
    trust: tuple[tuple[str, SourceFile], ...] = ()
    profiles: tuple[tuple[str, SourceFile], ...] = ()
    credentials: tuple[tuple[str, KeySource], ...] = ()
    """Credential files the profiles name (password_file, api_key_file), by the path named;
    data None when reading failed (the finding says why)."""
    findings: tuple[Finding, ...] = ()
    """What reading found: missing or oversized files, path escapes, unexpected names."""
    in_transit: bool = False
    """The state kept changing under the reader: not invalid, just not readable yet."""
    content_digest: str = ""
    """sha256 of every input read (the revision of a git STATE does not see key_dirs)."""
    skipped: tuple[Skipped, ...] = ()
    """Secret references not read on purpose (`validate --no-secrets`)."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on a StateInput: a DesiredState only when there is no error."""

    desired: DesiredState | None
    findings: tuple[Finding, ...]
    skipped: tuple[Skipped, ...] = ()

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")


def error(file: str, field_name: str | None, reason: str, rule: str = "") -> Finding:
    return Finding("error", file, field_name, reason, rule)


def parse_toml(data: bytes, file: str, model: type[ModelT]) -> tuple[ModelT | None, list[Finding]]:
    """Bytes to a model: UTF-8, TOML syntax, then types, values and unknown keys, all collected.

    The findings are a new list on every call; the model (frozen, as every Section is) may be
    shared with earlier calls on the same bytes.
    """
    if len(data) > _PARSE_CACHE_MAX_BYTES:
        parsed, findings = _parse_toml(data, file, model)
    else:
        # A class hashes by identity; mypy reads a dataclass's instance __hash__ as the class's.
        parsed, findings = _parse_toml_cached(data, file, cast(Any, model))
    return cast("ModelT | None", parsed), list(findings)


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _parse_toml_cached(
    data: bytes, file: str, model: type[Section]
) -> tuple[Section | None, tuple[Finding, ...]]:
    return _parse_toml(data, file, model)


def _parse_toml(
    data: bytes, file: str, model: type[Section]
) -> tuple[Section | None, tuple[Finding, ...]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (
            error(file, None, f"not UTF-8 text (byte {exc.start})", rule="toml-encoding"),
        )
    raw, problem = load_toml(text)
    if problem is not None:
        if problem.startswith("TOML syntax error"):
            return None, (error(file, None, problem, rule="toml-syntax"),)
        return None, (error(file, None, problem, rule="toml-limits"),)
    parsed, problems = check_table(raw, model)
    return parsed, tuple(
        error(file, where, reason, schema_rule(reason)) for where, reason in problems
    )


def schema_rule(reason: str) -> str:
    """The rule id of a `check_table` problem, told by its reason."""
    if reason.startswith("unknown key"):
        return "toml-unknown-key"
    if reason == "required key is missing":
        return "toml-missing-key"
    return "toml-value"


MAX_TOML_DEPTH = 32
"""Tables and arrays nested deeper than this are refused (a parser recursing 5,000 deep fails)."""
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def load_toml(text: str) -> tuple[dict[str, Any], str | None]:
    """TOML text as a table, or ({}, the reason) when it is not TOML or breaks a parsing limit:
    nesting deeper than MAX_TOML_DEPTH, an integer outside 64 bits. Never raises."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {}, f"TOML syntax error: {exc}"
    except RecursionError:
        return {}, f"nested deeper than {MAX_TOML_DEPTH} levels"
    except ValueError:  # an integer too long to convert (Python's digit limit)
        return {}, "an integer outside 64 bits (from -2**63 to 2**63-1)"
    problem = _limits(raw)
    return ({}, problem) if problem else (raw, None)


def _limits(raw: dict[str, Any]) -> str | None:
    """The first parsing limit `raw` breaks, walked without recursion."""
    stack: list[tuple[object, int, str]] = [(raw, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_TOML_DEPTH:
            return f"{where or 'a value'}: nested deeper than {MAX_TOML_DEPTH} levels"
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((item, depth + 1, f"{where}.{key}" if where else str(key)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{where}[{n}]") for n, item in enumerate(value))
        elif type(value) is int and not _INT_MIN <= value <= _INT_MAX:
            return f"{where}: an integer outside 64 bits (from -2**63 to 2**63-1)"
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KUBELET_DIR = re.compile(r"\.\.[^./][^/]*")


def looks_like_key(value: str) -> bool:
    """Text a message must never quote: it may be a pasted private key."""
    upper = value.upper()
    return "PRIVATE KEY" in upper or "-----BEGIN" in upper


def path_problem(path: str) -> str | None:
    """Why a path value in the desired state is refused before any file is opened, or None.

    The reason never quotes the value (a pasted key lands here): control characters (a NUL
    cannot be in a file name), PEM text instead of a path, and a component naming a kubelet
    `..NAME` directory (those come and go with every update; use the visible name, which links
    through `..data`)."""
    if looks_like_key(path):
        return "holds PEM text, not a path (give the path to the key file); value not shown"
    if _CONTROL.search(path):
        return "must not contain control characters (NUL, newline, ...)"
    if len(path) > 4096:
        return f"{len(path)} characters: at most 4096"
    for part in path.split("/"):
        if part != "..data" and _KUBELET_DIR.fullmatch(part):
            return (
                f"points into the kubelet directory {part!r}, which is replaced at every update: "
                "name the file through the volume's visible links"
            )
    return None


def check_table(
    raw: object, model: type[ModelT], where: str | None = None
) -> tuple[ModelT | None, list[tuple[str | None, str]]]:
    """A TOML table as `model`, or None and every problem: (dotted key or None, reason).

    Every key is checked, so one run reports every mistake; keys not in `model.RULES` are
    errors (a typo must not silently keep a default)."""
    if not isinstance(raw, dict):
        table = f"a table ([{where}])" if where else "a table"
        return None, [(where, f"must be {table}, got {_shown(raw)}")]
    problems: list[tuple[str | None, str]] = []
    values: dict[str, object] = {}
    for name, rule in model.RULES.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if rule.required:
                problems.append((key, "required key is missing"))
            continue
        value, problem = _check_value(raw[name], rule, key)
        if problem:
            problems += problem
        else:
            values[name] = value
    problems += [
        (f"{where}.{name}" if where else name, "unknown key (typo?)")
        for name in raw
        if name not in model.RULES
    ]
    if problems:
        return None, problems
    return model(**values), []


_TYPE_NAMES = {
    bool: "a boolean (true or false)",
    int: "an integer",
    str: "a string",
    list: "an array of strings",
}


def _check_value(
    value: object, rule: Rule, key: str
) -> tuple[object, list[tuple[str | None, str]]]:
    if issubclass(rule.type, Section):
        return check_table(value, rule.type, key)
    if rule.type is list:
        return _check_list(value, rule, key)
    # type(), not isinstance(): a TOML boolean is no integer here
    if type(value) is not rule.type:
        return None, [(key, f"must be {_TYPE_NAMES[rule.type]}, got {_shown(value)}")]
    if rule.choices and value not in rule.choices:
        wanted = ", ".join(repr(c) for c in rule.choices[:-1]) + f" or {rule.choices[-1]!r}"
        return None, [(key, f"must be {wanted}, got {_shown(value)}")]
    if isinstance(value, str):
        if rule.min_length is not None and len(value) < rule.min_length:
            least = "not be empty" if rule.min_length == 1 else f"have {rule.min_length}+ chars"
            return None, [(key, f"must {least}, got {_shown(value)}")]
        if rule.max_length is not None and len(value) > rule.max_length:
            return None, [(key, f"{len(value)} characters: at most {rule.max_length}")]
    if isinstance(value, int) and (
        (rule.ge is not None and value < rule.ge) or (rule.le is not None and value > rule.le)
    ):
        return None, [(key, f"must be from {rule.ge} to {rule.le}, got {value!r}")]
    return value, []


def _check_list(value: object, rule: Rule, key: str) -> tuple[object, list[tuple[str | None, str]]]:
    """An array of strings (a profile's `servers`), as a tuple; each item by the string rules."""
    if type(value) is not list:
        return None, [(key, f"must be {_TYPE_NAMES[list]}, got {_shown(value)}")]
    if not value:
        return None, [(key, "must hold at least one item")]
    if rule.max_items is not None and len(value) > rule.max_items:
        return None, [(key, f"{len(value)} items: at most {rule.max_items}")]
    item_rule = Rule(str, min_length=rule.min_length, max_length=rule.max_length)
    problems: list[tuple[str | None, str]] = []
    for index, item in enumerate(value):
        problems += _check_value(item, item_rule, f"{key}[{index}]")[1]
    return (None, problems) if problems else (tuple(value), [])


def _shown(value: object, limit: int = 60) -> str:
    """A value as a message quotes it: repr, cut short (a file may hold a megabyte string);
    never text that may be key material."""
    if isinstance(value, str) and looks_like_key(value):
        return "text that looks like key material (not shown)"
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        return "an integer outside 64 bits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def evaluate(inp: StateInput, now: datetime) -> Evaluation:
    """Validate a snapshot's bytes against every desired-state rule; collect all findings."""
    findings: list[Finding] = list(inp.findings)
    gateway: GatewayFile | None = None
    if inp.gateway is None:
        findings.append(error(GATEWAY_FILE, None, "required file is missing", rule="file-missing"))
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
        # A skipped secret reference (--no-secrets) leaves no Identity, and that is no error.
        skipped = any(s.field.startswith("identity.") for s in inp.skipped)
        if identity is None and _error_count(findings) == errors_before and not skipped:
            findings.append(
                error(
                    GATEWAY_FILE,
                    "identity",
                    "the identity files were not read",
                    rule="identity-unread",
                )
            )
    elif gateway is None and inp.cert is not None and inp.key is not None:
        _identity(inp, policy, now, findings)
    if gateway is not None and gateway.identity is None:
        if gateway.console.https:
            findings.append(
                error(
                    GATEWAY_FILE,
                    "console.https",
                    "HTTPS needs an [identity]",
                    rule="identity-required",
                )
            )
        if gateway.smtp_inbound.tls != "off":
            findings.append(
                error(
                    GATEWAY_FILE,
                    "smtp_inbound.tls",
                    "inbound STARTTLS needs an [identity]",
                    rule="identity-required",
                )
            )

    trust = list(_trust(inp.trust, now, findings))
    skipped_paths = frozenset(s.path for s in inp.skipped)
    profiles = list(_profiles(inp.profiles, policy, findings, dict(inp.credentials), skipped_paths))
    ordered = tuple(sorted(findings, key=lambda f: (f.severity != "error", f.file, f.field or "")))
    if gateway is None or any(f.severity == "error" for f in ordered):
        return Evaluation(None, ordered, inp.skipped)
    desired = DesiredState(
        revision=inp.revision,
        gateway=gateway,
        identity=identity,
        trust=tuple(sorted(trust, key=lambda t: t.name)),
        profiles=tuple(sorted(profiles, key=lambda p: p.name)),
        warnings=tuple(f for f in ordered if f.severity == "warning"),
    )
    return Evaluation(desired, ordered, inp.skipped)


def _error_count(findings: list[Finding]) -> int:
    return sum(1 for f in findings if f.severity == "error")


def _policy_alone(source: SourceFile | None) -> PolicySection:
    """[policy] of a gateway.toml that failed as a whole, or the defaults."""
    if source is None or source.data is None:
        return PolicySection()
    try:
        raw, _problem = load_toml(source.data.decode("utf-8"))
    except UnicodeDecodeError:
        return PolicySection()
    policy, _ = check_table(raw.get("policy", {}), PolicySection, "policy")
    return policy or PolicySection()


def _identity(
    inp: StateInput, policy: PolicySection, now: datetime, findings: list[Finding]
) -> Identity | None:
    if inp.cert is None or inp.key is None:
        return None  # the snapshot already reported why
    key_skipped = any(s.field == "identity.key" for s in inp.skipped)
    if inp.cert.data is None or (inp.key.data is None and not key_skipped):
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
    first_file: dict[str, str] = {}
    for name, source in sources:
        if source.data is None:
            continue
        entry, found = check_trust(name, source.data, file=source.path, now=now)
        findings += found
        if entry is None:
            continue
        for cert in entry.certs:
            earlier = first_file.setdefault(cert.sha256_fingerprint, source.path)
            if earlier != source.path:
                findings.append(
                    Finding(
                        "warning",
                        source.path,
                        None,
                        f"certificate {cert.subject} is also in {earlier}: trusted once; "
                        "keep it in one file",
                        rule="trust-duplicate",
                    )
                )
        yield entry


def _profiles(
    sources: Iterable[tuple[str, SourceFile]],
    policy: PolicySection,
    findings: list[Finding],
    credentials: dict[str, KeySource],
    skipped: frozenset[str] = frozenset(),
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
        if profile is None:
            continue
        read: list[Credential] = []
        unread = 0  # under validate --no-secrets: checked where it is, not read
        for field_name, path in model.secret_files:
            secret = credentials.get(path)
            if path in skipped:
                unread += 1
                continue
            if secret is None:
                reason = f"{path}: was not read"
                findings.append(error(source.path, field_name, reason, rule="credential-file"))
                continue
            if secret.data is None:
                # The snapshot said why (missing, unreadable, outside key_dirs); never drop
                # the profile silently if it did not.
                if not any(
                    f.severity == "error" and (f.file, f.field) == (source.path, field_name)
                    for f in findings
                ):
                    reason = f"{path}: could not be read"
                    findings.append(error(source.path, field_name, reason, rule="credential-file"))
                continue
            credential, found = check_credential(field_name, path, secret.data, file=source.path)
            findings += found
            if credential is not None:
                read.append(credential)
        if len(read) + unread == len(model.secret_files):
            yield replace(profile, credentials=tuple(read)) if read else profile
