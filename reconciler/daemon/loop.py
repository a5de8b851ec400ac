"""The daemon: watch (events are hints) -> debounce -> one level-triggered pass -> report; repeat.

Threads
    * main: the loop. It asks `core.schedule.next_action` what to do, sleeps in `select` on a
      self-pipe until the deadline it names, runs passes, handles signals (their handlers only
      set flags; the wakeup fd interrupts the sleep), and alone touches the pass memory, the lock
      and the watches.
    * watchdog's observer threads: classify each inotify event and note it in `PendingEvents`
      (watch.py), then write one byte to the self-pipe. They never run a pass.
    * optional, supervised by `service.Services`: the metrics HTTP server, the systemd watchdog
      pinger and the profile prober; each only reads what the loop published.

Every pass is `reconcile.reconcile()`: the whole desired state against the set of targets,
whatever the event was. So a spurious event costs at most one extra pass. The events of a pass's
own writes start no pass: when every event due is in a target directory and every managed file
it names is still what the last pass left there (`reconcile.targets_as_left`), the loop only
notes it; a file that differs (someone's edit during or right after the pass) runs a pass as
any event does. A `no-change` pass writes only to var_dir, which is not watched (but for the
suspend marker). Targets are looked at again where the target watches named a path since
the previous pass began (`TargetEvents`; the pass's own writes are always looked at again); a
start, reload, retry or resync pass looks at all of them, so a lost event is found at the next
resync at the latest.

Deadlines (all `time.monotonic()`)
    * debounce: `core.schedule.Debounce`: quiet_period_ms after the last event, at most
      max_wait_ms after the first; at once after a link swap (`..data` or the STATE link).
    * resync: resync_interval_s after the end of the last pass; also at once after a watcher
      overflow or error, once the watches are re-established.
    * backoff: after a failed pass, `core.schedule.Backoff`: 30 s doubling to resync_interval_s
      for the same revision. An event while backing off peeks at the desired state's revision: a
      new revision is tried at once, the failing one waits (our own rollback writes must not
      retry it).
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from reconciler.config import Settings
from reconciler.core.outcome import Outcome
from reconciler.core.schedule import Backoff, Trigger, next_action, state_key
from reconciler.daemon.gate import LOCK_WAIT_S, lock_for_pass, own_writes_only
from reconciler.daemon.pending import PendingEvents, Wakeup
from reconciler.daemon.service import Liveness, PassReporter, Services, SystemdNotifier
from reconciler.daemon.watch import WatchdogLogHandler, Watcher, look_again, watch_specs
from reconciler.errors import ReconcilerError
from reconciler.gateway import TargetEvents
from reconciler.reconcile import (
    Hints,
    PassMemory,
    PassResult,
    Recorder,
    Tools,
    reconcile,
    settle_trust_links,
)
from reconciler.support.logging import configure_logging, get_logger
from reconciler.txn import RootLock

__all__ = ["Daemon", "run_daemon"]

log = get_logger("reconciler.daemon")

#: After an unexpected error in the loop, wait this long (or for an event) before going on.
LOOP_ERROR_PAUSE_S = 5.0
#: Beyond its hooks, lock wait and verification, a pass this much longer is taken as stuck.
STALL_MARGIN_S = 300.0


class Daemon:
    """The reconcile loop of `reconciler run`: it schedules passes and keeps what they return."""

    def __init__(
        self,
        settings: Settings,
        *,
        config: Path | None = None,
        state: Path | None = None,
        root: Path | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.settings = settings
        self._flags = (config, state, root)
        self._tools = Tools(_open_recorder(settings.audit_path))
        self._lock = RootLock(settings.var_dir)
        self._memory = PassMemory()
        self._backoff = Backoff()
        self._wakeup = Wakeup()
        self._pending = PendingEvents(
            settings.quiet_period_ms / 1000, settings.max_wait_ms / 1000, self._wakeup
        )
        self._log_handler = WatchdogLogHandler(self._pending)
        self._watcher = Watcher(self._pending, self._log_handler, self._wakeup)
        self._resync_at = 0.0
        self._signals: _Signals | None = None
        notifier = notifier if notifier is not None else SystemdNotifier()
        self._liveness = Liveness(self._stall_limit_s)
        self._services = Services(notifier, self._liveness.healthy, self.readiness)
        self._reporter = PassReporter(self._services)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0)."""
        signals = self._signals = _Signals(self._wakeup.write_fd)
        notifier = self._services.notifier
        try:
            self._services.start(self.settings)
            self._watch()
            log.info(
                "daemon.started",
                state=str(self.settings.state_dir),
                root=str(self.settings.root),
                pid=os.getpid(),
            )
            self._services.publish_head(self._tools.recorder.audit)
            self._cycle("start")
            if self._memory.settled is not None:  # every target as wanted (not suspended...)
                _settle_trust_links(self._lock, self._stopping, self.settings, self._tools)
            _freeze_start_up()
            notifier.notify("READY=1", self._reporter.status_line(self.settings.var_dir))
            self._services.start_pinger()
            while not signals.stopping:
                try:
                    self._step()
                except Exception as exc:  # one bad step (an unreadable directory, say) never
                    # stops the daemon; the pause keeps a step that fails at once from spinning
                    log.exception("loop.error", error=repr(exc))
                    self._wakeup.wait(LOOP_ERROR_PAUSE_S)
        finally:
            self._liveness.stopped()
            notifier.notify("STOPPING=1", "STATUS=stopping")
            self._services.heads.close()  # the last head witnessed, no witness left running
            self._services.stop()
            self._watcher.close()
            notifier.close()
            self._tools.recorder.close()
            self._wakeup.close()
            signals.restore()
        log.info("daemon.stopped", reason="signal")
        return 0

    def readiness(self) -> tuple[bool, str]:
        """/readyz: a verified configuration is in place (decided once per pass)."""
        decided = self._reporter.readiness  # one read: the reporter replaces it whole
        return decided.ready, decided.reason

    # -- the loop -------------------------------------------------------------------------------

    def _step(self) -> None:
        self._watcher.drain()
        forced: Trigger | None = None
        if self._signals is not None and self._signals.take_reload():
            self._reload_settings()
            forced = "reload"
        trouble = self._pending.take_trouble()
        if trouble is None and not self._watcher.healthy():
            trouble = "watcher stopped"
        if trouble is not None:
            log.warning("watch.reestablished", reason=trouble)
            self._watcher.restart(watch_specs(self.settings))
            # Events were (or may have been) lost: look at everything, as for any event.
            self._pending.note(urgent=True)
        now = time.monotonic()
        backoff = self._backoff
        action = next_action(
            now,
            event_due=self._pending.due_at(),
            backoff=backoff,
            resync_at=self._resync_at,
            forced=forced,
        )
        if action.kind == "wait":
            self._wakeup.wait(action.wait_s)
            return
        if action.kind == "check":
            self._pending.take()
            revision = peek_state(self.settings.state_dir, self.settings.key_dirs)
            if backoff.holds(revision, now):
                log.debug("pass.held_back", revision=revision, retry_in_s=_retry_in(backoff, now))
                return
        assert action.trigger is not None
        if action.trigger == "event" and own_writes_only(
            self._pending, self._memory.settled, self.settings, self._tools.caches
        ):
            return
        self._cycle(action.trigger)

    def _stopping(self) -> bool:
        return self._signals is not None and self._signals.stopping

    def _cycle(self, trigger: Trigger) -> None:
        """One pass: run it under the lock, keep its memory, report. Never raises for bad input
        or a failing pass."""
        self._pending.take()
        # A resync looks at everything: it is the net for whatever an event did not tell.
        events = self._watcher.target_events(look_at_everything=trigger != "event")
        started = time.monotonic()
        self._liveness.pass_started(started)
        audit = self._tools.recorder.audit
        appended = audit.appended if audit is not None else 0
        result: PassResult | None = None
        try:
            result = self._locked_pass(events)
        except ReconcilerError as exc:
            log.error("pass.error", trigger=trigger, error=str(exc))
        except Exception as exc:
            # A bug must not take the gateway's reconciler down: log it whole, back off, go on.
            log.exception("pass.crashed", trigger=trigger, error=repr(exc))
        finally:
            self._liveness.pass_ended()
        ended = time.monotonic()
        self._services.publish_head(audit, appended)
        if result is None and self._stopping():
            return
        self._resync_at = ended + self.settings.resync_interval_s
        if result is None:
            self._memory = self._memory.after_error()
            # What the pass read (if anything) is not known: the state read now may be a push
            # that landed while it failed, which must not wait for this failure's retry.
            retry_in = self._back_off(Outcome.FAILED, None, ended)
            self._services.notifier.notify(f"STATUS=error; retrying in {retry_in} s")
            return
        self._reporter.report(result, trigger, ended - started, self.settings)
        if result.outcome is Outcome.DEFERRED:
            self._pending.note(urgent=False)  # read it again once the swapper is done
        self._back_off(result.outcome, state_key(result.revision, result.content_digest), ended)
        self._watch()
        trim_heap()

    def _back_off(self, outcome: Outcome, state: str | None, now: float) -> float | None:
        """The schedule after a pass, decided here only: a failing state is retried after a
        growing delay, anything else clears it. The seconds until a retry, if one is due."""
        cap = self.settings.resync_interval_s
        backoff = self._backoff = self._backoff.after_pass(outcome, state, now, cap)
        if not backoff.active:
            return None
        retry_in = _retry_in(backoff, now)
        log.warning("pass.backoff", state=state, failures=backoff.failures, retry_in_s=retry_in)
        return retry_in

    def _locked_pass(self, events: TargetEvents | None) -> PassResult | None:
        """One pass under the ROOT lock; None when stopping while another process held it."""
        with lock_for_pass(self._lock, self._stopping) as held:
            if not held:
                return None
            hints = Hints(events=events, undisturbed=self._lock.undisturbed)
            result, self._memory = reconcile(self.settings, self._memory, hints, self._tools)
        return result

    def _stall_limit_s(self) -> float:
        hooks = sum(h.timeout_s * (2 if h.check else 1) for h in self.settings.hooks)
        # apply and rollback phases both may run every hook, and verification runs once
        return LOCK_WAIT_S + 2 * hooks + self.settings.verify.timeout_s + STALL_MARGIN_S

    def _watch(self) -> None:
        added = self._watcher.establish(watch_specs(self.settings))
        if added and self._reporter.last is not None:
            look_again(self._pending, added)

    # -- reload ---------------------------------------------------------------------------------

    def _reload_settings(self) -> None:
        from reconciler.config import load_settings_apart

        config, state, root = self._flags
        try:
            settings = load_settings_apart(config, state_dir=state, root=root)
            # Opened before anything switches: an audit log the new settings cannot open keeps
            # the daemon on the old settings rather than half on the new ones.
            recorder = _open_recorder(settings.audit_path)
        except (ReconcilerError, OSError) as exc:
            log.error("settings.reload_failed", error=str(exc), keeping="the previous settings")
            return
        previous = self._tools.recorder
        self.settings = settings
        configure_logging(settings.log_format)
        self._tools = Tools(recorder, self._tools.caches)
        previous.close()
        self._lock = RootLock(settings.var_dir)
        # What was reported stays reported across a reload; nothing else the passes knew holds.
        self._memory = PassMemory(reported=self._memory.reported)
        self._backoff = Backoff()
        self._pending.retime(settings.quiet_period_ms / 1000, settings.max_wait_ms / 1000)
        self._services.stop()
        self._services.start(settings)
        self._services.start_pinger()
        self._services.publish_head(recorder.audit)
        self._watcher.restart(watch_specs(settings))
        log.info("settings.reloaded", config=str(config) if config else None)


class _Signals:
    """SIGTERM and SIGINT ask the loop to stop, SIGHUP to reload the settings. The handlers only
    set flags; the byte on the wakeup fd ends the loop's select at once."""

    def __init__(self, wakeup_fd: int) -> None:
        self.stopping = False
        self._reload = False
        self._previous: dict[int, object] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._handle)
        self._previous_wakeup = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self.stopping = True

    def take_reload(self) -> bool:
        """Whether a reload was asked for since the last call."""
        asked, self._reload = self._reload, False
        return asked

    def restore(self) -> None:
        signal.set_wakeup_fd(self._previous_wakeup)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def peek_state(state_dir: Path, key_dirs: Sequence[Path]) -> str | None:
    """The desired state's backoff key, read without evaluating it; None if it cannot be read."""
    from reconciler.source import read_snapshot

    try:
        inp = read_snapshot(state_dir, key_dirs)
    except Exception:  # a peek must never stop the loop; the pass reports the problem
        return None
    return state_key(inp.revision, inp.content_digest)


def _open_recorder(audit_path: Path) -> Recorder:
    from reconciler.audit import AuditLog

    return Recorder(AuditLog(audit_path))


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim). A pass frees
    what it read and rendered, but malloc keeps freed pages for the next allocation: a daemon
    that idles for hours should not hold its busiest pass's peak. Elsewhere, nothing."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return


def _retry_in(backoff: Backoff, now: float) -> float | None:
    at = backoff.retry_at
    return None if at is None else round(at - now, 1)


def _freeze_start_up() -> None:
    """What start-up and the first pass built (modules, parsed certificates, rendered targets)
    lives as long as the process. Frozen, the collector stops walking it: a full collection
    during a later pass would otherwise delay that pass."""
    gc.collect()
    gc.freeze()
    trim_heap()


def _settle_trust_links(
    lock: RootLock, stopping: Callable[[], bool], settings: Settings, tools: Tools
) -> None:
    """The trust store's links looked at whole once, after the start pass, under the lock."""
    try:
        with lock_for_pass(lock, stopping) as held:
            if held:
                settle_trust_links(settings, tools.caches)
    except ReconcilerError as exc:
        # The links stay as they are; the first pass that changes a trust entry looks again.
        log.warning("trust.links_unsettled", error=str(exc))


def run_daemon(
    settings: Settings,
    *,
    config: Path | None = None,
    state: Path | None = None,
    root: Path | None = None,
) -> int:
    """`reconciler run`: the daemon in the foreground until SIGTERM/SIGINT (exit 0)."""
    configure_logging(settings.log_format)
    return Daemon(settings, config=config, state=state, root=root).run()
