"""plan(desired targets, observed targets) -> changes: pure, and empty once applied."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from reconciler.core.desired import KINDS, MAX_FILE_BYTES, CertInfo, Kind
from reconciler.core.render import Target

Action = Literal["create", "update", "delete"]
Cause = Literal["desired", "drift"]


@dataclass(frozen=True, slots=True)
class Observed:
    """A target file as found on disk."""

    kind: Kind
    sha256: str
    mode: int
    gid: int


@dataclass(frozen=True, slots=True)
class Change:
    """One target to create, update or delete, and why."""

    kind: Kind
    path: str
    action: Action
    before_sha256: str | None
    after_sha256: str | None
    mode: int | None
    """Mode after the change (None for a delete)."""
    cause: Cause
    """`drift`: someone else changed a target whose desired content did not change."""
    target: Target | None = field(default=None, repr=False)
    """What to write (None for a delete)."""
    certs: tuple[CertInfo, ...] = ()


OVERSIZED = "oversized"
"""The digest a plan shows for a target larger than anything the reconciler writes: never read."""

WRITTEN_BYTES_BOUND = 4 * MAX_FILE_BYTES
"""More than any target the reconciler writes from inputs within their limits (the largest,
`tls.pem`, is a key and a chain, each file at most MAX_FILE_BYTES): what an earlier pass wrote
is always read, kept and put back by a rollback, however much smaller this pass's files are."""


def read_limit(targets: Sequence[Target]) -> int:
    """The largest target file a pass reads (to compare it, and to keep it for a rollback): a
    file found larger than this is drift to replace, not content (a sparse file of hundreds of
    megabytes, say). WRITTEN_BYTES_BOUND, or the largest content of `targets` when larger (a
    server-profiles.json of very many profiles)."""
    largest = max((len(t.content) for t in targets if t.content is not None), default=0)
    return max(WRITTEN_BYTES_BOUND, largest)


@dataclass(frozen=True, slots=True)
class Plan:
    """The changes one pass makes, sorted by path."""

    revision: str
    changes: tuple[Change, ...]
    read_limit: int = 0
    """`read_limit` of the pass's targets: what staging reads of a target's current content."""

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """The changed resource kinds, in a stable order (what hooks are matched against)."""
        present = {c.kind for c in self.changes}
        return tuple(k for k in KINDS if k in present)

    @property
    def empty(self) -> bool:
        return not self.changes


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def plan(
    revision: str,
    targets: Sequence[Target],
    observed: Mapping[str, Observed],
    last_applied: Mapping[str, str | None] | None = None,
) -> Plan:
    """Compare wanted with found. `observed` holds every existing target file, including managed
    trust files that are no longer wanted; anything observed but not among `targets` is deleted.

    `last_applied` maps each path to the sha256 (or None: absent) the last successful pass left
    there; a difference where the wanted content equals it is drift, not a desired change.
    """
    last = last_applied or {}
    changes: list[Change] = []
    wanted = {t.path: t for t in targets}
    for target in targets:
        found = observed.get(target.path)
        after = target.sha256
        before = found.sha256 if found is not None else None
        if target.content is None:
            if found is None:
                continue
            action: Action = "delete"
        elif found is None:
            action = "create"
        elif (
            before != after
            or found.mode & 0o7777 != target.mode
            or (target.gid is not None and found.gid != target.gid)
        ):
            action = "update"
        else:
            continue
        cause: Cause = "drift" if target.path in last and last[target.path] == after else "desired"
        changes.append(
            Change(
                kind=target.kind,
                path=target.path,
                action=action,
                before_sha256=before,
                after_sha256=after,
                mode=target.mode if target.content is not None else None,
                cause=cause,
                target=target if target.content is not None else None,
                certs=target.certs,
            )
        )
    for path, found in observed.items():
        if path in wanted:
            continue
        # Wanted by the last pass and no longer: a desired delete. Otherwise nobody we know of
        # wanted it there (someone planted a prefixed file after we converged): drift.
        cause = "drift" if last_applied is not None and last.get(path) is None else "desired"
        changes.append(Change(found.kind, path, "delete", found.sha256, None, None, cause))
    changes.sort(key=lambda c: c.path)
    return Plan(revision, tuple(changes), read_limit(targets))
