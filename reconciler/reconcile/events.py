"""The audit events: one type per event, the shape of its record, and the recorder that writes them.

Every step a pass reports is one of these values. `Recorder.record` appends its audit record
first (fsynced: the step is durable before anything reports it) and then emits the same event,
with its `seq`, to the operational log. The record's fields are the event's own, in the order
they are declared here (docs/audit.md lists them); `revision` is the record's common field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, Protocol

from reconciler.support.logging import Level, Logger, get_logger
from reconciler.support.redact import made

if TYPE_CHECKING:
    from reconciler.audit import AuditLog, Event, Record
    from reconciler.core.desired import CertInfo
    from reconciler.core.plan import Change
    from reconciler.hooks import HookResult
    from reconciler.txn import Journal

__all__ = [
    "AuditEvent",
    "ChangeApplied",
    "DriftCorrected",
    "HookRan",
    "Notice",
    "PassFailed",
    "PassStarted",
    "PassSucceeded",
    "Progress",
    "Recorder",
    "RecoveryCompleted",
    "RollbackCompleted",
    "StateRejected",
    "StateWarning",
    "applied_change",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One audit record to be: its event name, its revision, and its own fields."""

    name: ClassVar[Event]
    level: ClassVar[Level] = "info"
    """How the operational log shows it: above info when the operator should notice."""
    revision: str | None

    def fields(self) -> dict[str, object]:
        """The record's event-specific fields, in declaration order."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "revision"
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PassStarted(AuditEvent):
    """A pass with changes begins applying them."""

    name: ClassVar[Event] = "pass.started"
    kinds: tuple[str, ...]
    changes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _TargetChange(AuditEvent):
    """One target replaced, created or removed; a certificate target names its certificate."""

    kind: str
    path: str
    action: str
    before_sha256: str | None
    after_sha256: str | None
    certificate: CertInfo | None = None

    def fields(self) -> dict[str, object]:
        # What the reconciler made itself (the path it rendered, digests, the certificate's
        # serial, expiry and fingerprint) is escaped, never searched for secrets; a
        # certificate's subject and issuer come from a pushed file and are scrubbed whole.
        shown: dict[str, object] = {
            "kind": _made(self.kind),
            "path": _made(self.path),
            "action": _made(self.action),
            "before_sha256": _made(self.before_sha256),
            "after_sha256": _made(self.after_sha256),
        }
        if self.certificate is not None:
            info = self.certificate.fields()
            shown.update(info)
            for name in ("serial", "not_after", "sha256_fingerprint"):
                shown[name] = _made(info[name])
        return shown


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeApplied(_TargetChange):
    """A target changed because the desired state did."""

    name: ClassVar[Event] = "change.applied"


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftCorrected(_TargetChange):
    """A target changed back: someone had edited it since the last pass."""

    name: ClassVar[Event] = "drift.corrected"


def _made(text: str | None) -> str | None:
    return None if text is None else made(text)


def applied_change(revision: str, change: Change) -> ChangeApplied | DriftCorrected:
    """The record of one applied change: `drift.corrected` when it undid someone's edit."""
    kind = DriftCorrected if change.cause == "drift" else ChangeApplied
    return kind(
        revision=revision,
        kind=change.kind,
        path=change.path,
        action=change.action,
        before_sha256=change.before_sha256,
        after_sha256=change.after_sha256,
        certificate=change.certs[0] if change.certs else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PassSucceeded(AuditEvent):
    """Every change is in place, the hooks ran and verification passed."""

    name: ClassVar[Event] = "pass.succeeded"
    changes: int
    kinds: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PassFailed(AuditEvent):
    """A pass did not complete; what it changed was put back."""

    name: ClassVar[Event] = "pass.failed"
    level: ClassVar[Level] = "warning"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StateRejected(AuditEvent):
    """The desired state is invalid; nothing was touched."""

    name: ClassVar[Event] = "state.rejected"
    level: ClassVar[Level] = "warning"
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateWarning(AuditEvent):
    """A finding of the desired state that does not stop it from being applied."""

    name: ClassVar[Event] = "warning"
    level: ClassVar[Level] = "warning"
    file: str | None
    field: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice(AuditEvent):
    """An operational warning: a rollback not finished, a suspension, pending changes."""

    name: ClassVar[Event] = "warning"
    level: ClassVar[Level] = "warning"
    reason: str
    details: Mapping[str, object] = field(default_factory=dict)
    """Further fields of the record (`suspended`, `pending`, ...), in this order."""

    def fields(self) -> dict[str, object]:
        return {"reason": self.reason, **self.details}


@dataclass(frozen=True, slots=True, kw_only=True)
class HookRan(AuditEvent):
    """One step (check or run) of one hook, in the apply or rollback phase."""

    name: ClassVar[Event] = "hook.ran"
    hook: str
    step: str
    phase: str
    exit_code: int | None
    duration_ms: int
    output_tail: str
    error: str | None

    @classmethod
    def of(cls, revision: str, result: HookResult) -> HookRan:
        return cls(
            revision=revision,
            hook=result.hook,
            step=result.step,
            phase=result.phase,
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
            output_tail=result.output_tail,
            error=result.error,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackCompleted(AuditEvent):
    """The previous generation is back in place and the services were told."""

    name: ClassVar[Event] = "rollback.completed"
    level: ClassVar[Level] = "warning"
    changes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryCompleted(AuditEvent):
    """An interrupted pass was resolved at start-up or before the next pass.

    It names every target the interrupted pass touched: that pass may have died before its
    change records were written, and the log must never miss a change.
    """

    name: ClassVar[Event] = "recovery.completed"
    action: str
    phase: str
    changes: int
    targets: tuple[Mapping[str, object], ...]
    stale_files_removed: int

    @classmethod
    def of(
        cls, journal: Journal, phase: str, action: str, stale_files_removed: int
    ) -> RecoveryCompleted:
        """`phase`: where the pass stopped (`Transaction.stopped_at`), not always its journal's."""
        return cls(
            revision=journal.revision,
            action=action,
            phase=phase,
            changes=len(journal.entries),
            targets=tuple(
                {
                    "kind": _made(e.kind),
                    "path": _made(e.path),
                    "action": _made(e.action),
                    "before_sha256": _made(e.before_sha256),
                    "after_sha256": _made(e.after_sha256),
                }
                for e in journal.entries
            ),
            stale_files_removed=stale_files_removed,
        )


#: Every event type; each audit event name has at least one (tests hold them to `EVENTS`).
EVENT_TYPES: Final[tuple[type[AuditEvent], ...]] = (
    PassStarted,
    ChangeApplied,
    PassSucceeded,
    PassFailed,
    StateRejected,
    StateWarning,
    Notice,
    HookRan,
    RollbackCompleted,
    DriftCorrected,
    RecoveryCompleted,
)


class Progress(Protocol):
    """Where a pass says which of its steps it is in (a terminal's progress line)."""

    def step(self, what: str) -> None:
        """A step begins: `what` it does, shown until the next step."""


class _NoProgress:
    def step(self, what: str) -> None:
        pass


class Recorder:
    """Feeds each event to both sinks: the audit log first (durable), then the operational log.

    `progress` hears which step a pass is in. With `summarize_changes`, `change.applied` and
    `drift.corrected` go to the audit log only, not one log line each: a person at a terminal
    gets a summary by kind instead (the JSON log keeps a record per change).
    """

    def __init__(
        self,
        audit: AuditLog | None,
        logger: Logger | None = None,
        *,
        progress: Progress | None = None,
        summarize_changes: bool = False,
    ) -> None:
        self.audit = audit
        self.logger = logger if logger is not None else get_logger("reconciler.audit")
        self.progress: Progress = progress if progress is not None else _NoProgress()
        self.summarize_changes = summarize_changes
        self._held: list[tuple[Level, str, dict[str, object]]] | None = None

    def hold_log(self) -> None:
        """From now until `release_log`, log lines wait in memory, in order; their audit records
        are written as ever. A pass holds the lines of what it records before its hooks and
        writes them once the first hook runs: formatting and writing them never delays the
        services, and the audit log, the record that counts, is durable first anyway."""
        if self._held is None:
            self._held = []

    def release_log(self) -> None:
        """Write the lines held since `hold_log`, and hold no more (nothing when none are)."""
        held, self._held = self._held, None
        for level, event, fields in held or ():
            self.logger.log(level, event, **fields)

    def _log(self, level: Level, event: str, **fields: object) -> None:
        if self._held is not None:
            self._held.append((level, event, fields))
        else:
            self.logger.log(level, event, **fields)

    def record(self, event: AuditEvent, *, sync: bool = True) -> Record | None:
        """Append the audit record (fsynced) and log the event; returns the record.

        Without an audit log (commands that only read, like `plan`) only the log line is
        written and None is returned. AuditError propagates: a step whose record could not be
        written must not be reported done. `sync=False`: see `record_many`.
        """
        written = self.record_many([event], sync=sync)
        return written[0] if written else None

    def record_many(self, events: Sequence[AuditEvent], *, sync: bool = True) -> list[Record]:
        """Several events with one audit write and one fsync, then their log lines, in order.

        `sync=False`: the records are written but not fsynced; the caller runs `sync` (in the
        same batch as the fsyncs of the step they record) before it reports the step done."""
        entries = [(e.name, e.revision, e.fields()) for e in events]
        if self.audit is None:
            for event, (name, revision, fields) in zip(events, entries, strict=True):
                if not self._summarized(event):
                    self._log(event.level, made(name), revision=_made(revision), **fields)
            return []
        written = self.audit.append_many(entries, sync=sync)
        for event, (name, revision, fields), record in zip(events, entries, written, strict=True):
            if self._summarized(event):
                continue
            # The audit record's JSON values (scrubbed once, there), so both sinks show the same
            # text for the same event. The event name and revision are the reconciler's own.
            logged = {key: record[key] for key in fields}
            self._log(
                event.level, made(name), revision=_made(revision), seq=record["seq"], **logged
            )
        return written

    def _summarized(self, event: AuditEvent) -> bool:
        return self.summarize_changes and isinstance(event, _TargetChange)

    def sync(self) -> None:
        """Make every record written so far durable (see `record_many`)."""
        if self.audit is not None:
            self.audit.sync()

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
