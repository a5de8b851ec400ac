"""Trust files: one or more certificates each, canonical PEM, dated and told apart from leaves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.core.certificates import (
    CACHE_SIZE,
    as_utc,
    cert_name,
    read_certs,
    validity_problem,
)
from reconciler.core.collect import Findings, error
from reconciler.core.desired import CertInfo, Finding, TrustEntry
from reconciler.core.memo import Memo


def check_trust(
    name: str, data: bytes, *, file: str, now: datetime
) -> tuple[TrustEntry | None, list[Finding]]:
    """Validate one trust file (one or more certificates); canonical PEM in file order."""
    now = as_utc(now)
    data = bytes(data)
    # What this file's bytes said the last time: a Kubernetes volume or git-sync worktree
    # rewrites every file on each update, yet a daemon pass over thousands of unchanged entries
    # must stay cheap. Kept by file, compared by content: the bytes read at each pass are new
    # objects, and hashing each of them as a key would be one more pass over them all. Only the
    # date checks depend on `now`, and they are redone below on every call.
    parsed = _parsed.get(file)
    if parsed is None or parsed.data != data or parsed.name != name:
        parsed = _parsed.put(file, _parse_trust(name, data, file))
    if parsed.certs is None:
        return None, list(parsed.findings)
    if parsed.valid_from <= now <= parsed.valid_until:
        # Every certificate is in its validity period: what the bytes say is all there is to say.
        return parsed.entry, [*parsed.findings, *parsed.warnings]
    items = list(parsed.findings)
    dated = False
    for position, info in enumerate(parsed.certs, start=1):
        problem = validity_problem(info, now)
        if problem:
            reason = f"{cert_name(position, info)} is {problem}"
            items.append(error(file, None, reason, rule="trust-validity"))
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
        f"{cert_name(position, info)} is not a CA certificate: trusts this server's certificate "
        "directly (it must be replaced in the trust store whenever the server renews it)",
        rule="trust-not-ca",
    )


_NEVER_FROM = datetime.max.replace(tzinfo=UTC)
_NEVER_UNTIL = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _ParsedTrust:
    """What a trust file's bytes say whatever the time: certificates, reading findings, entry."""

    name: str
    data: bytes
    """The bytes they were read from (as NAME)."""
    certs: tuple[CertInfo, ...] | None
    findings: tuple[Finding, ...]
    entry: TrustEntry | None
    """The entry to return when no certificate is out of its validity period."""
    warnings: tuple[Finding, ...] = ()
    """The non-CA warnings, which are the same at any time."""
    valid_from: datetime = _NEVER_FROM
    valid_until: datetime = _NEVER_UNTIL
    """When every certificate is valid (an empty window when never)."""


#: The files' bytes are kept: bounded in bytes too, so that many large or changing trust
#: files (each up to MAX_FILE_BYTES) cannot make the memo hold more than this.
_PARSED_MAX_BYTES = 64 * 1024 * 1024
_parsed: Memo[str, _ParsedTrust] = Memo(
    CACHE_SIZE, _PARSED_MAX_BYTES, lambda parsed: len(parsed.data)
)
"""File -> what its bytes said when last checked."""


def _parse_trust(name: str, data: bytes, file: str) -> _ParsedTrust:
    out = Findings()
    certs = read_certs(data, file, None, out)
    if certs is None:
        return _ParsedTrust(name, data, None, tuple(out.items), None)
    infos = tuple(c.info for c in certs)
    entry = None
    if not out.has_error:
        pem = b"".join(c.pem for c in certs)
        entry = TrustEntry(
            name=name,
            # The file itself when it is canonical already (the common case): the memo's key
            # and the entry then share one copy.
            pem=data if pem == data else pem,
            certs=infos,
        )
    warnings = tuple(
        _not_a_ca(file, position, info)
        for position, info in enumerate(infos, start=1)
        if not info.is_ca
    )
    return _ParsedTrust(
        name,
        data,
        infos,
        tuple(out.items),
        entry,
        warnings,
        valid_from=max((info.not_before for info in infos), default=_NEVER_FROM),
        valid_until=min((info.not_after for info in infos), default=_NEVER_UNTIL),
    )
