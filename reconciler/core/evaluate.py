"""The verdict on one snapshot's bytes: every desired-state rule run, findings collected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter

from reconciler.core.collect import error
from reconciler.core.desired import (
    Credential,
    DesiredState,
    Finding,
    GatewayFile,
    Identity,
    PolicySection,
    Profile,
    ProfileFile,
    TrustEntry,
)
from reconciler.core.identity import check_identity
from reconciler.core.memo import Memo
from reconciler.core.profile import check_credential, check_profile
from reconciler.core.schema import check_table, parse_toml
from reconciler.core.secret import SecretBytes
from reconciler.core.toml_limits import load_toml
from reconciler.core.trust import check_trust

GATEWAY_FILE = "gateway.toml"

_BY_NAME = attrgetter("name")


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
    origins: tuple[tuple[str, str], ...] = ()
    """A composed gateway.toml's values written in a shared layer: `table.key` (or `table`) ->
    that layer's file, relative to STATE. Findings on them name that file."""
    originals: tuple[SourceFile, ...] = ()
    """Files as written where what is evaluated differs (a composed gateway.toml, a layer's
    files): where findings' lines and columns are looked up."""


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

    trust = _trust(inp.trust, now, findings)
    skipped_paths = frozenset(s.path for s in inp.skipped)
    profiles = list(_profiles(inp.profiles, policy, findings, dict(inp.credentials), skipped_paths))
    if inp.origins:
        findings = [_attributed(f, dict(inp.origins)) for f in findings]
    ordered = tuple(sorted(findings, key=lambda f: (f.severity != "error", f.file, f.field or "")))
    if gateway is None or any(f.severity == "error" for f in ordered):
        return Evaluation(None, ordered, inp.skipped)
    desired = DesiredState(
        revision=inp.revision,
        gateway=gateway,
        identity=identity,
        trust=tuple(sorted(trust, key=_BY_NAME)),
        profiles=tuple(sorted(profiles, key=_BY_NAME)),
        warnings=tuple(f for f in ordered if f.severity == "warning"),
    )
    return Evaluation(desired, ordered, inp.skipped)


def _attributed(finding: Finding, origins: dict[str, str]) -> Finding:
    """`finding` naming the file its gateway.toml field was written in (a shared layer's)."""
    if finding.file != GATEWAY_FILE or not finding.field:
        return finding
    parts = finding.field.split(".")
    for length in range(len(parts), 0, -1):
        where = origins.get(".".join(parts[:length]))
        if where is not None:
            return replace(finding, file=where)
    return finding


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
) -> list[TrustEntry]:
    entries: list[TrustEntry] = []
    first_file: dict[str, str] = {}
    for name, source in sources:
        if source.data is None:
            continue
        path = source.path
        entry, found = check_trust(name, source.data, file=path, now=now)
        if found:
            findings += found
        if entry is None:
            continue
        for cert in entry.certs:
            earlier = first_file.setdefault(cert.sha256_fingerprint, path)
            if earlier != path:
                findings.append(
                    Finding(
                        "warning",
                        path,
                        None,
                        f"certificate {cert.subject} is also in {earlier}: trusted once; "
                        "keep it in one file",
                        rule="trust-duplicate",
                    )
                )
        entries.append(entry)
    return entries


@dataclass(frozen=True, slots=True)
class _CheckedProfile:
    """What a profile file's bytes said under a policy: the model, the profile, the findings."""

    name: str
    data: bytes
    policy: PolicySection
    model: ProfileFile | None
    profile: Profile | None
    findings: tuple[Finding, ...]


_checked_profiles: Memo[str, _CheckedProfile] = Memo(
    16384, 64 * 1024 * 1024, lambda checked: len(checked.data)
)
"""File -> its last verdict (as NAME). By file, compared by content, as trust files are kept (see
check_trust): a daemon re-reads thousands of unchanged profiles at every pass."""


def _checked_profile(name: str, data: bytes, file: str, policy: PolicySection) -> _CheckedProfile:
    kept = _checked_profiles.get(file)
    if (
        kept is not None
        and kept.data == data
        and kept.name == name
        and (kept.policy is policy or kept.policy == policy)
    ):
        return kept
    model, found = parse_toml(data, file, ProfileFile)
    profile = None
    if model is not None:
        profile, more = check_profile(name, model, file=file, policy=policy)
        found += more
    checked = _CheckedProfile(name, data, policy, model, profile, tuple(found))
    return _checked_profiles.put(file, checked)


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
        checked = _checked_profile(name, source.data, source.path, policy)
        if checked.findings:
            findings += checked.findings
        model, profile = checked.model, checked.profile
        if model is None or profile is None:
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
