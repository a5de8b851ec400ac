"""One pass as a call: `reconcile(settings, memory, hints, tools) -> (PassResult, PassMemory)`.

A pass reads the whole desired state, compares it with the targets and makes them match,
whatever prompted it (level-triggered). It keeps no state of its own: everything one pass hands
the next is the `PassMemory` value it returns, and the caller (`reconciler apply`, the daemon)
keeps it. It returns what happened and decides nothing about what comes next: when to retry a
failing state is the daemon's scheduling (`core.schedule`). Call with the ROOT lock held.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.config import Settings
from reconciler.core.desired import Finding
from reconciler.core.layout import RootLayout
from reconciler.core.outcome import Outcome
from reconciler.core.plan import Plan
from reconciler.core.render import Target
from reconciler.gateway import ObservationCache, Observations, TargetEvents, set_dir_modes
from reconciler.hooks import HookResult
from reconciler.reconcile.applying import Applied, apply_plan, complete, roll_back
from reconciler.reconcile.events import (
    Notice,
    PassFailed,
    Recorder,
    RecoveryCompleted,
    StateRejected,
    StateWarning,
)
from reconciler.reconcile.planning import Planned, make_plan
from reconciler.source import SourceCache
from reconciler.support import fsio
from reconciler.support.confined import remove_stale_temps
from reconciler.support.logging import get_logger
from reconciler.truststore import TrustLinks
from reconciler.txn import (
    Transaction,
    UnfinishedJournalError,
    crashpoint,
    records,
    remove_orphan_staging,
)

__all__ = ["Caches", "Hints", "PassMemory", "PassResult", "Tools", "reconcile"]

log = get_logger("reconciler.pass")


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass did, for the command line, the daemon and the metrics."""

    outcome: Outcome
    revision: str
    plan: Plan | None = None
    findings: tuple[Finding, ...] = ()
    reason: str | None = None
    hooks: tuple[HookResult, ...] = field(default=())
    content_digest: str = ""
    """What was read, whatever the revision says: a new key in key_dirs under the same commit
    is a new desired state (backoff tells states apart by this)."""
    drift: int = 0
    """How many of the changes applied undid someone else's edit of a target."""

    @property
    def ok(self) -> bool:
        return self.outcome.ok


@dataclass(frozen=True, slots=True)
class PassMemory:
    """Everything a pass hands the next. A process starts from `PassMemory()`."""

    observations: Observations | None = None
    """What the last pass that ended normally found at the targets (see TargetEvents)."""
    interrupted: bool = True
    """Whether a pass of ours may have left temp files behind (none has ended normally yet, or
    the last one raised): recovery then sweeps the target directories for them."""
    settled: tuple[Target, ...] | None = None
    """The targets as the last pass left them when it left every one as desired (converged, or
    nothing to change); None after any other outcome. What the daemon compares its target
    events with, to tell a pass's own writes from someone else's (`targets_as_left`)."""
    reported: frozenset[tuple[str, str, Hashable]] = frozenset()
    """What was reported once and is not reported again while its revision stays the current
    one: a rejection, a warning, or the pending changes while suspended, as (what, revision,
    detail). Only the current revision's are kept, so this never grows with the history."""

    def after_error(self) -> PassMemory:
        """The pass raised: nothing it knew of the targets holds."""
        return replace(self, observations=None, interrupted=True, settled=None)


@dataclass(frozen=True, slots=True)
class Hints:
    """What the caller knows that can spare the pass work; without hints it looks at everything."""

    events: TargetEvents | None = None
    """What the daemon's watches saw at the targets since the previous pass began. Without it
    (a start, a resync, `apply`), the pass looks at every target and reads every input file
    again, whatever its caches say."""
    undisturbed: bool = False
    """The ROOT lock says no other process held it since our previous pass (see RootLock)."""


@dataclass(frozen=True, slots=True)
class Caches:
    """Every file cache a process keeps between its passes, handed to each pass as one object.

    Each trusts what it read from a file while the file's identity (device, inode, size, mtime,
    ctime) holds, so files nobody touched are not read again: the desired state and key_dirs,
    the targets, and the trust store's hash links.
    """

    sources: SourceCache = field(default_factory=SourceCache)
    targets: ObservationCache = field(default_factory=ObservationCache)
    trust_links: TrustLinks = field(default_factory=TrustLinks)


@dataclass(frozen=True, slots=True)
class Tools:
    """The pass's long-lived collaborators: where its events go, and the process's caches."""

    recorder: Recorder
    caches: Caches = field(default_factory=Caches)


def reconcile(
    settings: Settings, memory: PassMemory, hints: Hints, tools: Tools
) -> tuple[PassResult, PassMemory]:
    """Recover an interrupted pass, then run one pass; the caller holds the ROOT lock.

    A failed recovery is the result when the pass after it has nothing to do: the operator
    must hear that the interrupted pass was undone.
    """
    reported = set(memory.reported)
    recovered, memory = _recover(settings, memory, hints, tools)
    if recovered is not None:
        log.warning("recovery.result", outcome=recovered.outcome, reason=recovered.reason)
    crashpoint("recovered")
    prior = memory.observations if hints.undisturbed else None
    caches = tools.caches
    _tell_trust_links(settings, hints, caches.trust_links)
    planned = make_plan(
        settings,
        cache=caches.targets,
        prior=prior,
        events=hints.events,
        progress=tools.recorder.progress,
        sources=caches.sources,
    )
    result = _decide(settings, planned, tools, reported)
    observations = None
    if planned.observations is not None:
        # What this pass wrote (or put back) is looked at again, whatever its events do.
        written = planned.plan.changes if planned.plan is not None else ()
        observations = planned.observations.forget(c.path for c in written)
    result = replace(result, content_digest=planned.content_digest)
    if recovered is not None and not recovered.ok and result.outcome is Outcome.NO_CHANGE:
        result = recovered
    if result.outcome is not Outcome.DEFERRED:
        _record_status(settings.var_dir, result)
    current = frozenset(key for key in reported if key[1] == result.revision)
    as_desired = result.outcome in (Outcome.CONVERGED, Outcome.NO_CHANGE)
    settled = planned.targets if as_desired and planned.plan is not None else None
    return result, PassMemory(observations, False, settled, current)


def settle_trust_links(settings: Settings, caches: Caches) -> None:
    """After a daemon's first pass left every target as wanted, the trust store's links made
    right where the reconciler makes them (see TrustStore.settle_links): the directory is looked
    at whole once, at the start, not at the first pass that changes a trust entry. The caller
    holds the ROOT lock; a ReconcilerError says what could not be done."""
    from reconciler.truststore import trust_store_from_settings

    trust_store_from_settings(settings, caches.trust_links).settle_links()


def _tell_trust_links(settings: Settings, hints: Hints, links: TrustLinks) -> None:
    """What the watch on the trust directory saw since the pass before began: the links made in
    process are looked at there only (see truststore.hashlinks)."""
    events = hints.events
    trust_dir = os.path.realpath(settings.trust_path)
    if events is None or not hints.undisturbed or trust_dir not in events.watched:
        links.made.saw(None)
        return
    links.made.saw(
        path.rpartition("/")[2] for path in events.touched if path.rpartition("/")[0] == trust_dir
    )


def _record_status(var_dir: Path, result: PassResult) -> None:
    """status.json's record of this pass (for `reconciler status`), written once, from the
    result: what `status` shows is what the pass returned."""
    changes = len(result.plan.changes) if result.plan is not None else 0
    reason = result.reason
    if result.outcome is Outcome.SUSPENDED:
        reason = f"suspended: {changes} change(s) pending"
    elif result.outcome is Outcome.REJECTED and result.findings:
        reason = str(next((f for f in result.findings if f.severity == "error"), reason))
    ok = result.outcome is Outcome.CONVERGED
    records.record_attempt(
        var_dir,
        revision=result.revision,
        outcome=result.outcome,
        reason=None if result.ok else reason,
        changes=changes if ok else 0,
        drift=result.drift if ok else 0,
    )


# -- recovery ---------------------------------------------------------------------------------


def _recover(
    settings: Settings, memory: PassMemory, hints: Hints, tools: Tools
) -> tuple[PassResult | None, PassMemory]:
    """Resolve an interrupted pass (see transaction's docstring)."""
    recorder, links = tools.recorder, tools.caches.trust_links
    var_dir = settings.var_dir
    unfinished: UnfinishedJournalError | None = None
    try:
        txn = Transaction.load(var_dir, root=settings.root)
    except UnfinishedJournalError as exc:
        txn, unfinished = None, exc
    removed: list[Path] = []
    stale: list[Path] = []
    if memory.interrupted or not hints.undisturbed or txn is not None or unfinished:
        # Listing every target directory before each of a daemon's passes finds nothing
        # unless a pass died or another process held the lock.
        removed = remove_orphan_staging(var_dir, keep=txn.journal.id if txn else None)
        layout = RootLayout(settings.root)
        target_dirs = [*layout.target_dirs, settings.trust_path, layout.secrets]
        stale = remove_stale_temps([*target_dirs, var_dir], confined=[settings.root])
        memory = replace(memory, observations=None)
    if unfinished is not None:
        # Its pass stopped before the journal was whole, so before the swap: nothing to undo.
        fsio.remove_file(unfinished.path)
        reason = f"{unfinished.path}: {unfinished.WHAT}; removed"
        recorder.record(Notice(revision=None, reason=reason))
    if txn is None:
        return None, memory
    journal = txn.journal
    revision = journal.revision
    phase = txn.stopped_at()
    if phase == "swapped":
        applied = complete(settings, recorder, txn, trust_links=links)
        action = "completed" if applied.ok else "rolled-back"
        result = _result_of(applied, revision, None)
    elif phase == "prepared":
        txn.restore()
        txn.finish_rollback()
        action = "undone"
        reason = "interrupted before its files were all in place; undone"
        result = PassResult(Outcome.FAILED, revision, reason=reason)
    else:
        hooks = roll_back(settings, recorder, txn, hooks_ran=True, trust_links=links)
        action = "rolled-back"
        reason = "interrupted during rollback; rolled back"
        result = PassResult(Outcome.FAILED, revision, reason=reason, hooks=tuple(hooks))
    recorder.record(RecoveryCompleted.of(journal, phase, action, len(stale) + len(removed)))
    return result, memory


# -- one pass ---------------------------------------------------------------------------------


def _decide(
    settings: Settings, planned: Planned, tools: Tools, reported: set[tuple[str, str, Hashable]]
) -> PassResult:
    """What the pass does with what it planned: defer, reject, nothing, hold, or apply."""
    evaluation = planned.evaluation
    revision = planned.revision
    var_dir = settings.var_dir
    recorder = tools.recorder
    if planned.in_transit:
        # Being swapped as we read it: not a rejection; the next read will see it whole.
        return PassResult(
            Outcome.DEFERRED, revision, findings=evaluation.findings, reason="in transit"
        )
    if planned.blocked is not None:
        # A link where the reconciler's directory belongs: nothing is done through it.
        recorder.record(PassFailed(revision=revision, reason=planned.blocked))
        return PassResult(
            Outcome.FAILED, revision, findings=evaluation.findings, reason=planned.blocked
        )
    if planned.plan is None:
        errors = tuple(str(f) for f in evaluation.errors)
        if _first_time(reported, ("rejected", revision, errors)):
            recorder.record(StateRejected(revision=revision, errors=errors))
        return PassResult(
            Outcome.REJECTED, revision, findings=evaluation.findings, reason="; ".join(errors)
        )
    last = planned.last_applied
    current = planned.plan
    suspended = records.load_suspension(var_dir) is not None
    if planned.dir_modes and not suspended:
        _set_dir_modes(settings, recorder, revision, planned)
    if not current.empty or last is None or last.revision != revision:
        # Once per revision, not at every resync or cron run of an unchanged state.
        _record_warnings(recorder, revision, evaluation.warnings, reported)
    if current.empty:
        _remember(var_dir, revision, planned.targets, last)
        return PassResult(Outcome.NO_CHANGE, revision, current, evaluation.findings)
    if suspended:
        _report_suspended(recorder, current, reported)
        return PassResult(
            Outcome.SUSPENDED, revision, current, evaluation.findings, reason="suspended"
        )
    links = tools.caches.trust_links
    applied = apply_plan(settings, recorder, current, planned.targets, trust_links=links)
    if applied.ok:
        _remember(var_dir, revision, planned.targets, None)
    # The pass's warnings go with its result, whatever it did: `apply` prints them.
    return _result_of(applied, revision, current, evaluation.findings)


def _set_dir_modes(settings: Settings, recorder: Recorder, revision: str, planned: Planned) -> None:
    """The reconciler's directories under ROOT get their modes back (whatever else the pass
    does: they are no target of its plan), each change recorded."""
    try:
        done = set_dir_modes(settings.root, planned.dir_modes)
    except OSError as exc:
        done = [f"cannot set the mode of a directory: {fsio.describe(exc, exc.filename or '?')}"]
    for sentence in done:
        recorder.record(Notice(revision=revision, reason=sentence))


def _result_of(
    applied: Applied, revision: str, current: Plan | None, findings: tuple[Finding, ...] = ()
) -> PassResult:
    outcome = Outcome.CONVERGED if applied.ok else Outcome.FAILED
    return PassResult(
        outcome, revision, current, findings, applied.reason, applied.hooks, drift=applied.drift
    )


def _first_time(reported: set[tuple[str, str, Hashable]], key: tuple[str, str, Hashable]) -> bool:
    """Whether `key` is new (and from now on, known): what is reported only once."""
    if key in reported:
        return False
    reported.add(key)
    return True


def _record_warnings(
    recorder: Recorder,
    revision: str,
    warnings: Iterable[Finding],
    reported: set[tuple[str, str, Hashable]],
) -> None:
    for warning in warnings:
        if _first_time(reported, ("warning", revision, str(warning))):
            recorder.record(
                StateWarning(
                    revision=revision, file=warning.file, field=warning.field, reason=warning.reason
                )
            )


def _report_suspended(
    recorder: Recorder, current: Plan, reported: set[tuple[str, str, Hashable]]
) -> None:
    """While suspended, pending changes and drift are recorded once per distinct plan."""
    pending = tuple((c.path, c.action, c.cause) for c in current.changes)
    if not _first_time(reported, ("suspended", current.revision, pending)):
        return
    recorder.record(
        Notice(
            revision=current.revision,
            reason=f"suspended: {len(pending)} change(s) not applied",
            details={
                "suspended": True,
                "pending": [f"{action} {path}" for path, action, _ in pending],
                "drift": [path for path, _, cause in pending if cause == "drift"],
            },
        )
    )


def _remember(
    var_dir: Path,
    revision: str,
    targets: Sequence[Target],
    last: records.LastApplied | None,
) -> None:
    """Record what the targets now are: the reference drift is measured against."""
    wanted = {t.path: t.sha256 for t in targets}
    if last is None or last.revision != revision or last.targets != wanted:
        records.store_last_applied(var_dir, revision, wanted)
