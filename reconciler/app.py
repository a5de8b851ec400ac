"""One pass, end to end: snapshot -> evaluate -> render -> plan -> stage -> swap -> hooks -> verify.

This is the one place that sequences effects (STYLE: the apply sequence is explicit). Failures
after the swap started roll back inside one cleanup path, `_roll_back`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, Protocol

from cryptography.hazmat.primitives.serialization import Encoding

from reconciler import fsio, records
from reconciler.core.desired import CertInfo, Finding, Kind
from reconciler.core.load import Evaluation, evaluate
from reconciler.core.plan import Change, Observed, Plan, digest, plan
from reconciler.core.render import Layout, Target, render
from reconciler.credentials import (
    credentials_dir,
    ensure_credentials_dir,
    leftover_kind,
    managed_credentials,
)
from reconciler.errors import ApplyError, HookFailedError
from reconciler.hooks import HookResult, hook_environment, hooks_for, run_hook
from reconciler.journal import Journal
from reconciler.rootlock import RootLock, crashpoint
from reconciler.settings import Settings
from reconciler.snapshot import read_snapshot
from reconciler.staging import ensure_target_dirs, remove_orphan_staging
from reconciler.transaction import Transaction

if TYPE_CHECKING:
    from reconciler.audit import Event

Outcome = Literal["converged", "no-change", "rejected", "failed", "suspended", "deferred"]


class Recorder(Protocol):
    """Where pass events go: the audit log (fsynced) and the operational log."""

    def record(self, event: Event, revision: str | None, **fields: Any) -> Any: ...

    def record_many(self, entries: Sequence[tuple[Event, str | None, Mapping[str, Any]]]) -> Any:
        """Several records with one durable write, in order."""


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
    is a new desired state (the daemon's backoff tells states apart by this)."""

    @property
    def ok(self) -> bool:
        return self.outcome in ("converged", "no-change")


@dataclass(frozen=True, slots=True)
class Planned:
    """A desired state evaluated and compared with the targets."""

    revision: str
    evaluation: Evaluation
    plan: Plan | None
    targets: tuple[Target, ...] = ()
    in_transit: bool = False
    last_applied: records.LastApplied | None = None
    content_digest: str = ""
    observations: Observations | None = None


def layout_for(settings: Settings) -> Layout:
    from reconciler.nginx import detect_ssl_on

    return Layout(
        root=PurePosixPath(settings.root),
        trust_dir=PurePosixPath(settings.trust_path),
        trust_prefix=settings.trust_prefix,
        ssl_on=detect_ssl_on(settings.nginx_ssl_on),
        key_mode=settings.key_mode_bits,
        gid=_gid(settings.file_group),
    )


def _gid(group: str | None) -> int | None:
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        from reconciler.errors import SettingsError

        raise SettingsError(f"file_group: no group named {group!r} on this host") from None


def observe(targets: Sequence[Target], layout: Layout) -> dict[str, Observed]:
    """Every existing target file, plus managed trust files no longer wanted."""
    return Observations.full(targets, layout).found


@dataclass(frozen=True, slots=True)
class TargetEvents:
    """What the daemon's watches on the target directories saw since the previous pass began."""

    watched: frozenset[str]
    """Target directories (real paths) watched without a gap since before the previous pass."""
    touched: frozenset[str]
    """Real paths in those directories that had an event since the previous pass began."""


@dataclass(frozen=True, slots=True)
class Observations:
    """What one pass found at its targets: every path it looked at, and the files there.

    A daemon's next pass reuses what it found for each path whose directory is watched and saw
    no event there: with thousands of trust entries, an lstat per file was a large part of a pass.
    A pass's own writes are forgotten (`forget`), so they never depend on their events' timing.
    """

    found: dict[str, Observed]
    looked_at: frozenset[str]

    @classmethod
    def full(cls, targets: Sequence[Target], layout: Layout) -> Observations:
        from reconciler.truststore import managed_paths

        found: dict[str, Observed] = {}
        for target in targets:
            seen = _observe_one(target.path, target.kind)
            if seen is not None:
                found[target.path] = seen
        managed = managed_paths(str(layout.trust_dir), layout.trust_prefix).values()
        for path in managed:
            if path not in found:
                seen = _observe_one(path, "trust")
                if seen is not None:
                    found[path] = seen
        credentials = managed_credentials(layout)
        for path in credentials:
            if path not in found:
                seen = _observe_one(path, "profiles")
                if seen is not None:
                    found[path] = seen
        return cls(found, frozenset([*(t.path for t in targets), *managed, *credentials]))

    def since(
        self, events: TargetEvents, targets: Sequence[Target], layout: Layout
    ) -> Observations:
        """Look again only where the watches saw something (or could not see)."""
        real_of: dict[str, str] = {}  # a target directory as configured -> its real path
        for directory in {t.path.rpartition("/")[0] for t in targets if t.kind != "trust"}:
            real_of[directory] = os.path.realpath(directory)
        trust_dir = str(layout.trust_dir)
        real_of[trust_dir] = os.path.realpath(trust_dir)
        if real_of[trust_dir] not in events.watched:
            return Observations.full(targets, layout)
        # The events' real paths as the targets name them (a directory may be reached by a link).
        touched: set[str] = set()
        for directory, real in real_of.items():
            if real in events.watched:
                touched.update(
                    f"{directory}/{path.rpartition('/')[2]}"
                    for path in events.touched
                    if path.rpartition("/")[0] == real
                )
        wanted = {t.path: t.kind for t in targets}
        look: dict[str, Kind] = {
            path: kind
            for path, kind in wanted.items()
            if kind != "trust" and real_of[path.rpartition("/")[0]] not in events.watched
        }
        # Trust files no longer wanted are those seen last time, and any new one an event names.
        prefix = layout.trust_prefix
        for path in touched - wanted.keys():
            directory, _, name = path.rpartition("/")
            ours = directory == trust_dir and name.startswith(prefix) and name.endswith(".crt")
            if ours and not os.path.isdir(path):
                look[path] = "trust"
        known = wanted.keys() | self.found.keys()
        for path in (known - self.looked_at) | (known & touched):
            look.setdefault(path, wanted.get(path) or leftover_kind(path, layout))
        found = {
            path: seen for path in known - look.keys() if (seen := self.found.get(path)) is not None
        }
        for path, kind in look.items():
            seen = _observe_one(path, kind)
            if seen is not None:
                found[path] = seen
        return Observations(found, frozenset(wanted.keys() | found.keys()))

    def forget(self, paths: Iterable[str]) -> Observations:
        """These paths changed under us (this pass wrote them): look at them again next time."""
        return Observations(self.found, self.looked_at - set(paths))


# Whatever is looked at again (every target, for `apply` and the daemon's full passes), re-reading
# and hashing files nobody touched was most of a pass with thousands of trust entries. Kept for
# the life of the process. The stat key covers mode and group: chmod and chown change the ctime.
_OBSERVED: fsio.StatCache[Observed] = fsio.StatCache()


def _observe_one(path: str, kind: Kind) -> Observed | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(info.st_mode):
        seen = _OBSERVED.get(path, info)
        if seen is not None and seen.kind == kind:
            return seen
    read_at = fsio.now_ns()
    content = fsio.read_bytes(Path(path))
    if content is None:
        return Observed(kind, "not-a-regular-file", info.st_mode & 0o7777, info.st_gid)
    seen = Observed(kind, digest(content), info.st_mode & 0o7777, info.st_gid)
    _OBSERVED.put(path, info, seen, read_at)
    return seen


def make_plan(
    settings: Settings,
    now: datetime | None = None,
    *,
    prior: Observations | None = None,
    events: TargetEvents | None = None,
) -> Planned:
    """Read, validate, render and compare: everything a pass decides, no target touched.

    With the previous pass's `prior` observations and the target `events` seen since, only the
    targets something happened to are looked at again (the daemon); else every one is."""
    inp = read_snapshot(settings.state_dir, settings.key_dirs)
    evaluation = evaluate(inp, now or datetime.now(UTC))
    if evaluation.desired is None:
        return Planned(inp.revision, evaluation, None, in_transit=inp.in_transit)
    layout = layout_for(settings)
    targets = render(evaluation.desired, layout)
    last = records.load_last_applied(settings.var_dir)
    if prior is not None and events is not None:
        observations = prior.since(events, targets, layout)
    else:
        observations = Observations.full(targets, layout)
    result = plan(inp.revision, targets, observations.found, last.targets if last else None)
    return Planned(
        inp.revision,
        evaluation,
        result,
        targets,
        last_applied=last,
        content_digest=inp.content_digest,
        observations=observations,
    )


class Reconciler:
    """Runs passes against one ROOT. Holds nothing between passes but settings and the recorder."""

    def __init__(self, settings: Settings, recorder: Recorder) -> None:
        self.settings = settings
        self.recorder = recorder
        self.lock = RootLock(settings.var_dir)
        self.seen_rejections: set[tuple[str, tuple[str, ...]]] = set()
        self.seen_warnings: set[tuple[str, str]] = set()
        self._observations: Observations | None = None
        """What the last pass that ended normally found at the targets (see TargetEvents)."""
        self._interrupted = True
        """Whether a pass of ours may have left temp files behind (none has ended normally yet,
        or the last one raised): recovery then sweeps the target directories for them."""

    # -- recovery ------------------------------------------------------------------------------

    def recover(self) -> PassResult | None:
        """Resolve an interrupted pass (see transaction's docstring); call with the lock held."""
        var_dir = self.settings.var_dir
        txn = Transaction.load(var_dir)
        removed: list[Path] = []
        stale: list[Path] = []
        if self._interrupted or not self.lock.undisturbed or txn is not None:
            # Listing every target directory (10,000 trust entries) before each of a daemon's
            # passes found nothing unless a pass died or another process held the lock.
            removed = remove_orphan_staging(var_dir, keep=txn.journal.id if txn else None)
            stale = fsio.remove_stale_temps([*self._target_dirs(), var_dir])
            self._observations = None
        if txn is None:
            return None
        journal = txn.journal
        revision = journal.revision
        if journal.phase == "prepared":
            txn.restore()
            txn.finish_rollback()
            action = "undone"
            result = PassResult(
                "failed", revision, reason="interrupted before its files were all in place; undone"
            )
        elif journal.phase == "swapped":
            result = self._complete(txn)
            action = "completed" if result.ok else "rolled-back"
        else:
            hooks = self._roll_back(txn, hooks_ran=True)
            action = "rolled-back"
            reason = "interrupted during rollback; rolled back"
            result = PassResult("failed", revision, reason=reason, hooks=tuple(hooks))
        self.recorder.record(
            "recovery.completed",
            revision,
            action=action,
            phase=journal.phase,
            changes=len(journal.entries),
            # The interrupted pass may have died before its change records were written: the
            # recovery record names every target it touched, so the log never misses a change.
            targets=[
                {
                    "kind": e.kind,
                    "path": e.path,
                    "action": e.action,
                    "before_sha256": e.before_sha256,
                    "after_sha256": e.after_sha256,
                }
                for e in journal.entries
            ],
            stale_files_removed=len(stale) + len(removed),
        )
        return result

    def _target_dirs(self) -> list[Path]:
        root = self.settings.root
        return [root / "data", root / "nginx", self.settings.trust_path, credentials_dir(root)]

    # -- one pass ------------------------------------------------------------------------------

    def run_pass(
        self, *, now: datetime | None = None, events: TargetEvents | None = None
    ) -> PassResult:
        """One level-triggered pass; call with the lock held, after `recover`.

        `events`: what the daemon's watches saw at the targets since the previous pass began;
        without them (or when another process held the lock since) every target is looked at.
        """
        prior = self._observations if self.lock.undisturbed else None
        self._observations = None
        self._interrupted = True
        planned = make_plan(self.settings, now, prior=prior, events=events)
        result = self._run_planned(planned)
        if planned.observations is not None:
            # What this pass wrote (or put back) is looked at again, whatever its events do.
            written = planned.plan.changes if planned.plan is not None else ()
            self._observations = planned.observations.forget(c.path for c in written)
        self._interrupted = False
        return replace(result, content_digest=planned.content_digest)

    def _run_planned(self, planned: Planned) -> PassResult:
        settings = self.settings
        evaluation = planned.evaluation
        revision = planned.revision
        if planned.in_transit:
            # Being swapped as we read it: not a rejection; the next read will see it whole.
            return PassResult(
                "deferred", revision, findings=evaluation.findings, reason="in transit"
            )
        if planned.plan is None:
            errors = [str(f) for f in evaluation.errors]
            seen = (revision, tuple(errors))
            if seen not in self.seen_rejections:
                self.seen_rejections.add(seen)
                self.recorder.record("state.rejected", revision, errors=errors)
            records.record_attempt(
                settings.var_dir,
                revision=revision,
                outcome="rejected",
                reason=errors[0] if errors else None,
            )
            return PassResult(
                "rejected", revision, findings=evaluation.findings, reason="; ".join(errors)
            )
        last = planned.last_applied
        current = planned.plan
        if not current.empty or last is None or last.revision != revision:
            # Once per revision, not at every resync or cron run of an unchanged state.
            self._record_warnings(revision, evaluation.warnings)
        if current.empty:
            self._remember(revision, planned.targets, last)
            records.record_attempt(settings.var_dir, revision=revision, outcome="no-change")
            return PassResult("no-change", revision, current, evaluation.findings)
        if records.load_suspension(settings.var_dir) is not None:
            pending = len(current.changes)
            records.record_attempt(
                settings.var_dir,
                revision=revision,
                outcome="suspended",
                reason=f"suspended: {pending} change(s) pending",
            )
            return PassResult(
                "suspended", revision, current, evaluation.findings, reason="suspended"
            )
        result = self._apply(current, planned.targets, evaluation.findings)
        # The pass's warnings go with its result, whatever it did: `apply` prints them.
        return replace(result, findings=result.findings or evaluation.findings)

    def _record_warnings(self, revision: str, warnings: Sequence[Finding]) -> None:
        for warning in warnings:
            key = (revision, str(warning))
            if key in self.seen_warnings:
                continue
            self.seen_warnings.add(key)
            self.recorder.record(
                "warning", revision, file=warning.file, field=warning.field, reason=warning.reason
            )

    def _remember(
        self, revision: str, targets: Sequence[Target], last: records.LastApplied | None
    ) -> None:
        """Record what the targets now are: the reference drift is measured against."""
        wanted = {t.path: t.sha256 for t in targets}
        if last is None or last.revision != revision or last.targets != wanted:
            records.store_last_applied(self.settings.var_dir, revision, wanted)

    def _apply(
        self, current: Plan, targets: Sequence[Target], findings: tuple[Finding, ...]
    ) -> PassResult:
        revision = current.revision
        self.recorder.record(
            "pass.started", revision, kinds=list(current.kinds), changes=len(current.changes)
        )
        try:
            ensure_target_dirs(self.settings.root)
            txn = Transaction.prepare(self.settings.var_dir, current)
        except ApplyError as exc:
            return self._failed(revision, str(exc), current)
        try:
            ensure_credentials_dir(
                current,
                self.settings.root,
                self.settings.key_mode_bits,
                _gid(self.settings.file_group),
            )
            txn.swap()
        except ApplyError as exc:
            self._roll_back(txn, hooks_ran=False)
            return self._failed(revision, str(exc), current)
        # One audit write for all of them: the records are durable before the hooks run.
        self.recorder.record_many([_change_record(revision, c) for c in current.changes])
        several = tuple(Path(t.path) for t in targets if t.kind == "trust" and len(t.certs) > 1)
        result = self._complete(txn, current, several)
        if result.ok:
            self._remember(revision, targets, None)
        return result

    def _complete(
        self,
        txn: Transaction,
        current: Plan | None = None,
        several: Sequence[Path] | None = None,
    ) -> PassResult:
        """After the swap: refresh, hooks, verification, then commit or roll back. `several`: the
        trust files holding more than one certificate (None: not known, as in a recovery)."""
        journal = txn.journal
        hooks: list[HookResult] = []
        try:
            if journal.trust_changed:
                self._refresh_trust(journal, several)
            crashpoint("refreshed")
            self._run_hooks(journal, "apply", hooks)
            crashpoint("hooks-done")
            self._verify(journal)
        except (ApplyError, HookFailedError) as exc:
            rollback_hooks = self._roll_back(
                txn, hooks_ran=bool(hooks) or isinstance(exc, HookFailedError)
            )
            return self._failed(journal.revision, str(exc), current, tuple(hooks + rollback_hooks))
        # Audited before the commit point: a crash in between re-runs the hooks, never loses them.
        self.recorder.record(
            "pass.succeeded",
            journal.revision,
            changes=len(journal.entries),
            kinds=list(journal.kinds),
        )
        txn.commit()
        drift = sum(1 for e in journal.entries if e.cause == "drift")
        records.record_attempt(
            self.settings.var_dir,
            revision=journal.revision,
            outcome="converged",
            changes=len(journal.entries),
            drift=drift,
        )
        return PassResult("converged", journal.revision, current, hooks=tuple(hooks))

    def _roll_back(self, txn: Transaction, *, hooks_ran: bool) -> list[HookResult]:
        """Put the previous generation back and tell the services. The one cleanup path."""
        journal = txn.journal
        try:
            txn.restore()
        except ApplyError as exc:
            # A full or failing disk: the journal stays, and recovery finishes the rollback at
            # the next start or pass. The caller still records the pass as failed.
            self.recorder.record(
                "warning",
                journal.revision,
                reason=f"rollback not finished ({exc}); it is retried before the next pass",
            )
            return []
        if journal.trust_changed:
            from reconciler.trustbackends import trust_store_from_settings

            try:
                trust_store_from_settings(self.settings).refresh(removed=True)
            except ApplyError as exc:
                self.recorder.record(
                    "warning", journal.revision, reason=f"trust refresh during rollback: {exc}"
                )
        hooks: list[HookResult] = []
        if hooks_ran:
            try:
                self._run_hooks(journal, "rollback", hooks)
            except HookFailedError as exc:
                self.recorder.record("warning", journal.revision, reason=f"rollback hook: {exc}")
        txn.finish_rollback()
        self.recorder.record("rollback.completed", journal.revision, changes=len(journal.entries))
        return hooks

    def _failed(
        self, revision: str, reason: str, current: Plan | None, hooks: tuple[HookResult, ...] = ()
    ) -> PassResult:
        self.recorder.record("pass.failed", revision, reason=reason)
        records.record_attempt(
            self.settings.var_dir, revision=revision, outcome="failed", reason=reason
        )
        return PassResult("failed", revision, current, reason=reason, hooks=hooks)

    # -- steps after the swap --------------------------------------------------------------------

    def _refresh_trust(self, journal: Journal, several: Sequence[Path] | None) -> None:
        from reconciler.trustbackends import trust_store_from_settings

        store = trust_store_from_settings(self.settings)
        store.refresh(removed=journal.trust_removed, several=several)
        written = [Path(e.path) for e in journal.entries if e.kind == "trust" and e.staged]
        missing = store.missing_files_after_refresh(written)
        if missing:
            raise ApplyError(
                "trust store refresh did not install: "
                + ", ".join(missing[:5])
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )

    def _run_hooks(
        self, journal: Journal, phase: Literal["apply", "rollback"], results: list[HookResult]
    ) -> None:
        """Each hook whose `on` meets the pass's kinds, once, in settings-file order; what ran is
        appended to `results` as it runs, so a failure still reports every result.

        apply: the first failure (check, run or timeout) stops here and raises HookFailedError;
        the caller rolls back. rollback: every hook runs even if one fails (the old generation
        must reach every service); failures are raised together at the end, for a warning.
        """
        env = hook_environment(journal.kinds, journal.revision, str(self.settings.root), phase)
        failures: list[str] = []
        for hook in hooks_for(self.settings.hooks, journal.kinds):
            ran = run_hook(hook, phase=phase, env=env)
            for result in ran:
                results.append(result)
                self.recorder.record(
                    "hook.ran",
                    journal.revision,
                    hook=result.hook,
                    step=result.step,
                    phase=phase,
                    exit_code=result.exit_code,
                    duration_ms=result.duration_ms,
                    output_tail=result.output_tail,
                    error=result.error,
                )
            failed = next((r for r in ran if not r.ok), None)
            if failed is None:
                continue
            reason = failed.describe()
            if failed.step == "check":
                reason += "; its run step was not started"
            if phase == "apply":
                raise HookFailedError(reason)
            failures.append(reason)
        if failures:
            raise HookFailedError("; ".join(failures))

    def _verify(self, journal: Journal) -> None:
        """After the hooks: the console presents the leaf just applied, or no TLS when HTTPS is off.

        Only a pass that changed the identity or the console is verified: nothing else the
        console shows can have changed.
        """
        address = self.settings.verify.console
        if address is None or not {"identity", "console"} & set(journal.kinds):
            return
        from reconciler.verify import verify_console

        root = self.settings.root
        expected = None
        if (root / "nginx" / "ssl.conf").exists():
            cert = root / "data" / "cert.pem"
            expected = _leaf_fingerprint(cert)
            if expected is None:
                raise HookFailedError(
                    f"verification failed: ssl.conf is present but {cert} holds no readable "
                    "certificate to compare the console's with"
                )
        problem = verify_console(address, expected, self.settings.verify.timeout_s)
        if problem is not None:
            raise HookFailedError(f"verification failed: {problem}")

    # -- entry points ----------------------------------------------------------------------------

    def apply_once(self, lock_timeout_s: float) -> PassResult:
        """`reconciler apply`: recover, then one pass, under the lock."""
        with self.lock.held(lock_timeout_s):
            recovered = self.recover()
            crashpoint("recovered")
            result = self.run_pass()
            if recovered is not None and not recovered.ok and result.outcome == "no-change":
                return recovered
            return result


def _leaf_fingerprint(cert_path: Path) -> str | None:
    """SHA-256 of the first certificate in `cert_path` (the leaf), as verification compares it."""
    from reconciler.certfiles import certificates_in
    from reconciler.verify import fingerprint_of

    certs = certificates_in(cert_path)
    return fingerprint_of(certs[0].public_bytes(Encoding.DER)) if certs else None


def _change_record(revision: str, change: Change) -> tuple[Event, str, dict[str, Any]]:
    """The audit record of one applied change: `drift.corrected` when it undid someone's edit."""
    fields: dict[str, Any] = {
        "kind": change.kind,
        "path": change.path,
        "action": change.action,
        "before_sha256": change.before_sha256,
        "after_sha256": change.after_sha256,
    }
    if change.certs:
        fields.update(_cert_fields(change.certs[0]))
    event: Event = "drift.corrected" if change.cause == "drift" else "change.applied"
    return event, revision, fields


def _cert_fields(info: CertInfo) -> dict[str, Any]:
    return {
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "not_after": info.not_after.isoformat().replace("+00:00", "Z"),
        "sha256_fingerprint": info.sha256_fingerprint,
    }
