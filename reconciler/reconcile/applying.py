"""Applying a plan: stage, swap, refresh trust, run the hooks, verify; then commit or roll back.

The one place that sequences effects on the targets. Whatever fails once the swap has begun is
undone by one cleanup path, `roll_back`, registered once around the steps after staging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.config import Settings
from reconciler.core.layout import RootLayout
from reconciler.core.plan import Plan
from reconciler.core.render import Target
from reconciler.core.wording import counted
from reconciler.errors import ApplyError, HookFailedError, VerificationError
from reconciler.gateway import ensure_credentials_dir
from reconciler.hooks import HookPhase, HookResult, hook_environment, hooks_for, run_hook
from reconciler.reconcile.events import (
    HookRan,
    Notice,
    PassFailed,
    PassStarted,
    PassSucceeded,
    Recorder,
    RollbackCompleted,
    applied_change,
)
from reconciler.reconcile.planning import group_id
from reconciler.truststore import TrustLinks
from reconciler.txn import Journal, Transaction, crashpoint, ensure_target_dirs

__all__ = ["Applied", "apply_plan", "complete", "roll_back"]


@dataclass(frozen=True, slots=True)
class Applied:
    """How applying (or completing an interrupted apply) ended."""

    ok: bool
    reason: str | None = None
    hooks: tuple[HookResult, ...] = ()
    drift: int = 0
    """How many of the applied changes undid someone's edit."""


def apply_plan(
    settings: Settings,
    recorder: Recorder,
    current: Plan,
    targets: Sequence[Target],
    *,
    trust_links: TrustLinks | None = None,
) -> Applied:
    """Apply `current`: every change in place and the services told, or none of it.

    `trust_links`: the process's cache of the trust store's hash links (see runner.Caches)."""
    revision = current.revision
    # The log lines of what is recorded from here wait for the first hook to run (see
    # Recorder.hold_log); the records themselves are durable before any hook, as ever.
    recorder.hold_log()
    try:
        # Durable with the journal, in its fsync batch: before any target is touched.
        recorder.record(
            PassStarted(
                revision=revision, kinds=tuple(current.kinds), changes=len(current.changes)
            ),
            sync=False,
        )
        recorder.progress.step(f"staging {counted(len(current.changes), 'change')}")
        try:
            ensure_target_dirs(settings.root)
            ensure_credentials_dir(
                current, settings.root, settings.key_mode_bits, group_id(settings.file_group)
            )
            txn = Transaction.prepare(
                settings.var_dir, current, root=settings.root, also=(recorder.sync,)
            )
        except ApplyError as exc:
            return _failed(recorder, revision, str(exc))
        several = tuple(Path(t.path) for t in targets if t.kind == "trust" and len(t.certs) > 1)
        return complete(settings, recorder, txn, current, several, trust_links=trust_links)
    finally:
        recorder.release_log()


def complete(
    settings: Settings,
    recorder: Recorder,
    txn: Transaction,
    current: Plan | None = None,
    several: Sequence[Path] | None = None,
    *,
    trust_links: TrustLinks | None = None,
) -> Applied:
    """From a prepared transaction (`current`: its plan, to swap) or a swapped one (a recovery,
    `current` None): swap, refresh, hooks, verification, then commit or roll back.

    `several`: the trust files holding more than one certificate (None: not known)."""
    journal = txn.journal
    hooks: list[HookResult] = []
    try:
        if current is not None:
            changes = current.changes
            recorder.progress.step(f"swapping {counted(len(changes), 'file')} into place")
            # One audit write for all of them, made durable with the phase `swapped`: the
            # records are on disk before the hooks run.
            txn.swap(
                done=lambda: recorder.record_many(
                    [applied_change(journal.revision, c) for c in changes], sync=False
                ),
                also=(recorder.sync,),
            )
        if journal.trust_changed:
            recorder.progress.step("refreshing the trust store")
            _refresh_trust(settings, journal, current, several, trust_links)
        crashpoint("refreshed")
        _run_hooks(settings, recorder, journal, "apply", hooks)
        crashpoint("hooks-done")
        _verify(settings, journal)
    except (ApplyError, HookFailedError, VerificationError) as exc:
        hooks_ran = bool(hooks) or not isinstance(exc, ApplyError)
        rollback_hooks = roll_back(
            settings, recorder, txn, hooks_ran=hooks_ran, trust_links=trust_links
        )
        return _failed(recorder, journal.revision, str(exc), (*hooks, *rollback_hooks))
    # Audited before the commit point: a crash in between re-runs the hooks, never loses them.
    recorder.record(
        PassSucceeded(
            revision=journal.revision, changes=len(journal.entries), kinds=tuple(journal.kinds)
        )
    )
    recorder.progress.step("committing")
    txn.commit()
    drift = sum(1 for e in journal.entries if e.cause == "drift")
    return Applied(True, hooks=tuple(hooks), drift=drift)


def roll_back(
    settings: Settings,
    recorder: Recorder,
    txn: Transaction,
    *,
    hooks_ran: bool,
    trust_links: TrustLinks | None = None,
) -> list[HookResult]:
    """Put the previous generation back and tell the services. The one cleanup path."""
    journal = txn.journal
    recorder.progress.step("rolling back")
    try:
        txn.restore()
    except ApplyError as exc:
        # A full or failing disk: the journal stays, and recovery finishes the rollback at
        # the next start or pass. The caller still records the pass as failed.
        reason = f"rollback not finished ({exc}); it is retried before the next pass"
        recorder.record(Notice(revision=journal.revision, reason=reason))
        return []
    if journal.trust_changed:
        from reconciler.truststore import trust_store_from_settings

        try:
            trust_store_from_settings(settings, trust_links).refresh(removed=True)
        except ApplyError as exc:
            reason = f"trust refresh during rollback: {exc}"
            recorder.record(Notice(revision=journal.revision, reason=reason))
    hooks: list[HookResult] = []
    if hooks_ran:
        try:
            _run_hooks(settings, recorder, journal, "rollback", hooks)
        except HookFailedError as exc:
            recorder.record(Notice(revision=journal.revision, reason=f"rollback hook: {exc}"))
    txn.finish_rollback()
    recorder.record(RollbackCompleted(revision=journal.revision, changes=len(journal.entries)))
    return hooks


def _failed(
    recorder: Recorder, revision: str, reason: str, hooks: tuple[HookResult, ...] = ()
) -> Applied:
    recorder.record(PassFailed(revision=revision, reason=reason))
    return Applied(False, reason, hooks)


def _refresh_trust(
    settings: Settings,
    journal: Journal,
    current: Plan | None,
    several: Sequence[Path] | None,
    trust_links: TrustLinks | None,
) -> None:
    from reconciler.truststore import trust_store_from_settings

    store = trust_store_from_settings(settings, trust_links)
    # What the pass wrote is in memory: the links are made without reading those files back.
    changed = {
        Path(c.path).name: c.target.content if c.target is not None else None
        for c in (current.changes if current is not None else ())
        if c.kind == "trust"
    }
    store.refresh(removed=journal.trust_removed, several=several, changed=changed)
    written = [Path(e.path) for e in journal.entries if e.kind == "trust" and e.staged]
    missing = store.missing_files_after_refresh(written)
    if missing:
        raise ApplyError(
            "trust store refresh did not install: "
            + ", ".join(missing[:5])
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )


def _run_hooks(
    settings: Settings,
    recorder: Recorder,
    journal: Journal,
    phase: HookPhase,
    results: list[HookResult],
) -> None:
    """Each hook whose `on` meets the pass's kinds, once, in settings-file order; what ran is
    appended to `results` as it runs, so a failure still reports every result.

    apply: the first failure (check, run or timeout) stops here and raises HookFailedError;
    the caller rolls back. rollback: every hook runs even if one fails (the old generation
    must reach every service); failures are raised together at the end, for a warning.
    """
    env = hook_environment(journal.kinds, journal.revision, str(settings.root), phase)
    failures: list[str] = []
    for hook in hooks_for(settings.hooks, journal.kinds):
        recorder.progress.step(f"hook {hook.name} ({phase})")
        ran = run_hook(hook, phase=phase, env=env, started=recorder.release_log)
        for result in ran:
            results.append(result)
            recorder.record(HookRan.of(journal.revision, result))
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


def _verify(settings: Settings, journal: Journal) -> None:
    """After the hooks: the console presents the leaf just applied, or no TLS when HTTPS is off.

    Only a pass that changed the identity or the console is verified: nothing else the
    console shows can have changed.
    """
    address = settings.verify.console
    if address is None or not {"identity", "console"} & set(journal.kinds):
        return
    from reconciler.gateway import verify_console

    layout = RootLayout(settings.root)
    expected = None
    if layout.ssl_conf.exists():
        cert = layout.cert
        expected = _leaf_fingerprint(cert)
        if expected is None:
            raise VerificationError(
                f"verification failed: ssl.conf is present but {cert} holds no readable "
                "certificate to compare the console's with"
            )
    problem = verify_console(address, expected, settings.verify.timeout_s)
    if problem is not None:
        raise VerificationError(f"verification failed: {problem}")


def _leaf_fingerprint(cert_path: Path) -> str | None:
    """SHA-256 of the first certificate in `cert_path` (the leaf), as verification compares it."""
    from reconciler.gateway import fingerprint_of
    from reconciler.truststore import certificates_in

    certs = certificates_in(cert_path)
    return fingerprint_of(certs[0].public_bytes(Encoding.DER)) if certs else None
