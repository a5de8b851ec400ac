"""The daemon: watch (events are hints) -> debounce -> one level-triggered pass -> report; repeat.

Threads
    * main: the loop. It sleeps in `select` on a self-pipe until the earliest deadline (debounce,
      backoff retry or resync), runs passes, handles signals (their handlers only set flags; the
      wakeup fd interrupts the sleep), and alone touches the Reconciler, the lock and the watches.
    * watchdog's observer threads: classify each inotify event and note it in `PendingEvents`
      (watch.py), then write one byte to the self-pipe. They never run a pass.
    * optional: the metrics HTTP server, the systemd watchdog pinger and the profile prober; each
      only reads what the loop published.

Every pass is `Reconciler.run_pass()`: the whole desired state against the set of targets,
whatever the event was. So a spurious event costs at most one extra pass, and the pass after our
own writes finds nothing to do (`no-change` writes only to var_dir, which is not watched), so our
writes never feed a loop. Targets are looked at again where the target watches named a path since
the previous pass began (`TargetEvents`; the pass's own writes are always looked at again); a
start, reload, retry or resync pass looks at all of them, so a lost event is found at the next
resync at the latest.

Deadlines (all `time.monotonic()`)
    * debounce: `core.backoff.Debounce`: quiet_period_ms after the last event, at most
      max_wait_ms after the first; at once after a link swap (`..data` or the STATE link).
    * resync: resync_interval_s after the end of the last pass; also at once after a watcher
      overflow or error, once the watches are re-established.
    * backoff: after a failed pass, `core.backoff.Backoff`: 30 s doubling to resync_interval_s for
      the same revision. An event while backing off peeks at the desired state's revision: a new
      revision is tried at once, the failing one waits (our own rollback writes must not retry it).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Literal

from reconciler.core.backoff import Backoff, next_deadline
from reconciler.errors import LockHeldError, ReconcilerError, SettingsError
from reconciler.logging import Recorder, configure_logging, get_logger
from reconciler.readiness import NOT_YET, Readiness, applied_revision, decide
from reconciler.watch import PendingEvents, Wakeup, WatchdogLogHandler, Watcher, watch_specs

if TYPE_CHECKING:
    from reconciler.app import PassResult, Reconciler, TargetEvents
    from reconciler.health import HealthServer
    from reconciler.service import Metrics, SystemdNotifier, WatchdogPinger
    from reconciler.settings import Settings

__all__ = ["Daemon", "run_daemon"]

log = get_logger("reconciler.daemon")

#: After an unexpected error in the loop, wait this long (or for an event) before going on.
LOOP_ERROR_PAUSE_S = 5.0
#: How long one pass waits for another reconciler (`reconciler apply`) to release the ROOT lock.
LOCK_WAIT_S = 600.0
#: Beyond its hooks, lock wait and verification, a pass this much longer is taken as stuck.
STALL_MARGIN_S = 300.0


class Daemon:
    """The reconcile loop of `reconciler run`."""

    def __init__(
        self,
        settings: Settings,
        *,
        config: Path | None = None,
        state: Path | None = None,
        root: Path | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        from reconciler.service import SystemdNotifier

        self.settings = settings
        self._flags = (config, state, root)
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        self.reconciler = self._make_reconciler(settings)
        self._wakeup = Wakeup()
        self._pending = PendingEvents(
            settings.quiet_period_ms / 1000, settings.max_wait_ms / 1000, self._wakeup
        )
        self._log_handler = WatchdogLogHandler(self._pending)
        self._watcher = Watcher(self._pending, self._log_handler)
        self._backoff = Backoff()
        self._resync_at = 0.0
        self._stopping = False
        self._reload = False
        self._force: str | None = None
        self._in_pass_since: float | None = None
        self._watched_at_last_pass: frozenset[str] = frozenset()
        self._alive = True
        self._last: PassResult | None = None
        self._readiness = NOT_YET
        self._suspended_seen: set[tuple[str, tuple[tuple[str, str, str], ...]]] = set()
        self.metrics: Metrics | None = None
        self._server: HealthServer | None = None
        self._pinger: WatchdogPinger | None = None
        self._prober: threading.Thread | None = None
        self._stop_services = threading.Event()

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0)."""
        previous = self._install_signals()
        watchdog_logger = logging.getLogger("watchdog")
        watchdog_logger.addHandler(self._log_handler)
        # Reported through our own log (watch.trouble); not twice through logging's last resort.
        propagate, watchdog_logger.propagate = watchdog_logger.propagate, False
        try:
            self._start_services()
            self._watch()
            log.info(
                "daemon.started",
                state=str(self.settings.state_dir),
                root=str(self.settings.root),
                pid=os.getpid(),
            )
            self._cycle("start")
            # What start-up and the first pass built (modules, parsed certificates, rendered
            # targets: with many trust entries, a great many objects) lives as long as the process.
            # Frozen, the collector stops walking it: a full collection during a later pass
            # would otherwise delay that pass.
            gc.collect()
            gc.freeze()
            self.notifier.notify("READY=1", self._status_line())
            self._start_pinger()
            while not self._stopping:
                try:
                    self._step()
                except Exception as exc:  # one bad step (an unreadable directory, say) never
                    # stops the daemon; the pause keeps a step that fails at once from spinning
                    log.exception("loop.error", error=repr(exc))
                    self._wakeup.wait(LOOP_ERROR_PAUSE_S)
        finally:
            self._alive = False
            self.notifier.notify("STOPPING=1", "STATUS=stopping")
            self._shutdown()
            watchdog_logger.removeHandler(self._log_handler)
            watchdog_logger.propagate = propagate
            self._restore_signals(previous)
        log.info("daemon.stopped", reason="signal")
        return 0

    def request_stop(self) -> None:
        self._stopping = True
        self._wakeup.notify()

    def healthy(self) -> bool:
        """Alive: the loop runs and no pass has been going on for far longer than it may."""
        if not self._alive:
            return False
        started = self._in_pass_since
        return started is None or time.monotonic() - started < self._stall_limit_s()

    def readiness(self) -> tuple[bool, str]:
        """/readyz: a verified configuration is in place (decided once per pass, in _report)."""
        return self._readiness.ready, self._readiness.reason

    # -- the loop -------------------------------------------------------------------------------

    def _step(self) -> None:
        if self._reload:
            self._reload = False
            self._reload_settings()
            self._force = "reload"
        trouble = self._pending.take_trouble()
        if trouble is None and not self._watcher.healthy():
            trouble = "watcher stopped"
        if trouble is not None:
            log.warning("watch.reestablished", reason=trouble)
            self._watcher.restart(watch_specs(self.settings))
            # Events were (or may have been) lost: look at everything, as for any event.
            self._pending.note(urgent=True)
        now = time.monotonic()
        timed = self._backoff.retry_at if self._backoff.active else self._resync_at
        event_due = self._pending.due_at()
        if self._force is not None:
            reason, self._force = self._force, None
            self._cycle(reason)
        elif timed is not None and timed <= now:
            self._cycle("retry" if self._backoff.active else "resync")
        elif event_due is not None and event_due <= now:
            if self._backoff.active and self._held_back(now):
                return
            self._cycle("event")
        else:
            deadline = next_deadline(timed, event_due)
            self._wakeup.wait(None if deadline is None else max(0.0, deadline - now))

    def _held_back(self, now: float) -> bool:
        """While backing off: whether the event brought nothing but the failing revision."""
        self._pending.take()
        revision = self._peek_revision()
        if self._backoff.holds(revision, now):
            log.debug("pass.held_back", revision=revision, retry_in_s=self._retry_in(now))
            return True
        return False

    def _peek_revision(self) -> str | None:
        from reconciler.snapshot import read_snapshot

        try:
            inp = read_snapshot(self.settings.state_dir, self.settings.key_dirs)
        except Exception:  # a peek must never stop the loop; the pass reports the problem
            return None
        return _state_key(inp.revision, inp.content_digest)

    def _retry_in(self, now: float) -> float | None:
        at = self._backoff.retry_at
        return None if at is None else round(at - now, 1)

    def _cycle(self, trigger: str) -> None:
        """One pass: recover, run, report. Never raises for bad input or a failing pass."""
        self._pending.take()
        events = self._target_events(trigger)
        started = time.monotonic()
        self._in_pass_since = started
        result: PassResult | None = None
        try:
            result = self._locked_pass(trigger, events)
        except ReconcilerError as exc:
            log.error("pass.error", trigger=trigger, error=str(exc))
        except Exception as exc:
            # A bug must not take the gateway's reconciler down: log it whole, back off, go on.
            log.exception("pass.crashed", trigger=trigger, error=repr(exc))
        finally:
            self._in_pass_since = None
        ended = time.monotonic()
        if result is None and self._stopping:
            return
        if result is None:
            revision = self._peek_revision()
            self._backoff = self._backoff.after_pass("failed", revision, ended, self._cap())
            log.warning("pass.backoff", revision=revision, retry_in_s=self._retry_in(ended))
            self.notifier.notify(f"STATUS=error; retrying in {self._retry_in(ended)} s")
            self._resync_at = ended + self.settings.resync_interval_s
            return
        self._report(result, trigger, ended - started)
        if result.outcome == "deferred":
            self._pending.note(urgent=False)  # read it again once the swapper is done
        self._backoff = self._backoff.after_pass(
            result.outcome, _state_key(result.revision, result.content_digest), ended, self._cap()
        )
        self._resync_at = ended + self.settings.resync_interval_s
        if self._backoff.active:
            log.warning(
                "pass.backoff",
                revision=result.revision,
                failures=self._backoff.failures,
                retry_in_s=self._retry_in(ended),
            )
        self._watch()

    def _target_events(self, trigger: str) -> TargetEvents | None:
        """What the target watches saw since the last pass began; None: look at every target.

        A resync looks at everything: it is the net for whatever an event did not tell. A watch
        counts only once it was in place when the previous pass began (and so before it looked).
        """
        from reconciler.app import TargetEvents

        touched = self._pending.take_touched()
        watched = self._watcher.target_paths()
        steady = watched & self._watched_at_last_pass
        self._watched_at_last_pass = watched
        if touched is None or trigger in ("start", "reload", "resync", "retry"):
            return None
        return TargetEvents(steady, touched)

    def _locked_pass(self, trigger: str, events: TargetEvents | None) -> PassResult | None:
        with self._lock_held() as held:
            if not held:
                return None
            recovered = self.reconciler.recover()
            if recovered is not None:
                log.warning("recovery.result", outcome=recovered.outcome, reason=recovered.reason)
            result = self.reconciler.run_pass(events=events)
        if recovered is not None and not recovered.ok and result.outcome == "no-change":
            return recovered
        return result

    @contextmanager
    def _lock_held(self) -> Iterator[bool]:
        """The ROOT lock for one pass; waits for `reconciler apply`, gives up when stopping."""
        lock = self.reconciler.lock
        deadline = time.monotonic() + LOCK_WAIT_S
        waited = False
        while True:
            try:
                lock.acquire(1.0)
                break
            except LockHeldError:
                if self._stopping:
                    yield False
                    return
                if time.monotonic() >= deadline:
                    raise
                if not waited:
                    log.info("pass.waiting_for_lock", lock=str(lock.path))
                    waited = True
        try:
            yield True
        finally:
            lock.release()

    def _cap(self) -> float:
        return self.settings.resync_interval_s

    def _stall_limit_s(self) -> float:
        hooks = sum(h.timeout_s * (2 if h.check else 1) for h in self.settings.hooks)
        # apply and rollback phases both may run every hook, and verification runs once
        return LOCK_WAIT_S + 2 * hooks + self.settings.verify.timeout_s + STALL_MARGIN_S

    def _watch(self) -> None:
        if self._watcher.establish(watch_specs(self.settings)) and self._last is not None:
            # A new watch (a new worktree, a directory that appeared): what happened there before
            # it existed was not seen, so look once more after the quiet period.
            self._pending.note(urgent=False)

    # -- reporting ------------------------------------------------------------------------------

    def _report(self, result: PassResult, trigger: str, duration_s: float) -> None:
        from reconciler import records

        self._last = result
        self._readiness = _readiness_after(result, self.settings)
        suspended = records.load_suspension(self.settings.var_dir) is not None
        changes = result.plan.changes if result.plan is not None else ()
        fields: dict[str, object] = {
            "outcome": result.outcome,
            "revision": result.revision,
            "trigger": trigger,
            "changes": len(changes) if result.outcome != "no-change" else 0,
            "duration_ms": round(duration_s * 1000),
        }
        if result.reason and result.outcome != "suspended":
            fields["reason"] = result.reason
        level: Literal["info", "warning"] = "info" if result.ok else "warning"
        log.log(level, "pass.finished", **fields)
        if result.outcome == "suspended":
            self._report_suspended(result)
        self.notifier.notify(self._status_line(suspended))
        if self.metrics is not None:
            self.metrics.observe_pass(
                result, duration_s, time.time(), suspended=suspended, ready=self._readiness.ready
            )
            if result.ok:
                from reconciler.service import applied_expiry

                self.metrics.set_expiry(applied_expiry(self.settings))

    def _report_suspended(self, result: PassResult) -> None:
        """While suspended, pending changes and drift are reported once per distinct plan."""
        assert result.plan is not None
        pending = tuple((c.path, c.action, c.cause) for c in result.plan.changes)
        key = (result.revision, pending)
        if key in self._suspended_seen:
            return
        self._suspended_seen.add(key)
        drift = [path for path, _, cause in pending if cause == "drift"]
        self.reconciler.recorder.record(
            "warning",
            result.revision,
            reason=f"suspended: {len(pending)} change(s) not applied",
            suspended=True,
            pending=[f"{action} {path}" for path, action, _ in pending],
            drift=drift,
        )

    def _status_line(self, suspended: bool | None = None) -> str:
        from reconciler import records

        if suspended is None:
            suspended = records.load_suspension(self.settings.var_dir) is not None
        last = self._last
        if last is None:
            text = "no pass completed yet"
        else:
            text = f"{last.outcome} at revision {last.revision}"
            if last.outcome == "suspended" and last.plan is not None:
                text = f"suspended: {len(last.plan.changes)} change(s) pending at {last.revision}"
            elif last.reason and not last.ok:
                text += f": {last.reason}"
        if suspended and not text.startswith("suspended"):
            text = f"suspended; {text}"
        return "STATUS=" + text[:200]

    # -- signals and reload ---------------------------------------------------------------------

    def _install_signals(self) -> dict[int, object]:
        previous: dict[int, object] = {}

        def stop(signum: int, frame: FrameType | None) -> None:
            self._stopping = True

        def reload(signum: int, frame: FrameType | None) -> None:
            self._reload = True

        for signum, handler in ((signal.SIGTERM, stop), (signal.SIGINT, stop)):
            previous[signum] = signal.signal(signum, handler)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
        # The handlers only set flags; the byte on the wakeup fd ends the loop's select at once.
        previous[-1] = signal.set_wakeup_fd(self._wakeup.write_fd, warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, object]) -> None:
        wakeup = previous.pop(-1)
        assert isinstance(wakeup, int)
        signal.set_wakeup_fd(wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _reload_settings(self) -> None:
        from reconciler import nginx
        from reconciler.settingsload import load_settings

        config, state, root = self._flags
        try:
            settings = load_settings(config, state_dir=state, root=root)
        except SettingsError as exc:
            log.error("settings.reload_failed", error=str(exc), keeping="the previous settings")
            return
        try:
            # Built before anything switches: an audit log the new settings cannot open keeps
            # the daemon on the old settings rather than half on the new ones.
            reconciler = self._make_reconciler(settings)
        except (ReconcilerError, OSError) as exc:
            log.error("settings.reload_failed", error=str(exc), keeping="the previous settings")
            return
        nginx.clear_cache()
        previous = self.reconciler
        self.settings = settings
        configure_logging(settings.log_format)
        self.reconciler = reconciler
        # Rejections already audited stay deduplicated across a reload.
        self.reconciler.seen_rejections |= previous.seen_rejections
        self.reconciler.seen_warnings |= previous.seen_warnings
        _close_audit(previous)
        self._pending.retime(settings.quiet_period_ms / 1000, settings.max_wait_ms / 1000)
        self._backoff = Backoff()
        self._stop_optional_services()
        self._start_services()
        self._start_pinger()
        self._watcher.restart(watch_specs(settings))
        log.info("settings.reloaded", config=str(config) if config else None)

    @staticmethod
    def _make_reconciler(settings: Settings) -> Reconciler:
        from reconciler.app import Reconciler
        from reconciler.audit import AuditLog

        return Reconciler(settings, Recorder(AuditLog(settings.audit_path)))

    # -- services -------------------------------------------------------------------------------

    def _start_services(self) -> None:
        self._stop_services = threading.Event()
        address = self.settings.metrics_address
        if address is None:
            return
        from reconciler.health import HealthServer
        from reconciler.service import Metrics

        if self.metrics is None:
            self.metrics = Metrics.for_settings(self.settings)
        try:
            self._server = HealthServer(address, self.metrics, self.healthy, self.readiness)
        except OSError as exc:
            log.error("metrics.bind_failed", address=address, error=str(exc))
            return
        self._server.start()
        log.info("metrics.listening", address=address)
        if self.settings.probe_interval_s > 0:
            self._prober = threading.Thread(
                target=self._probe_loop, name="profile-probe", daemon=True
            )
            self._prober.start()

    def _start_pinger(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None or not self.notifier.enabled:
            return
        from reconciler.service import WatchdogPinger

        self._pinger = WatchdogPinger(self.notifier, interval, self.healthy)
        self._pinger.start()

    def _probe_loop(self) -> None:
        from datetime import UTC, datetime

        from reconciler.core.load import evaluate
        from reconciler.probe import probe_desired
        from reconciler.snapshot import read_snapshot

        stop = self._stop_services
        settings = self.settings
        while True:
            try:
                inp = read_snapshot(settings.state_dir, settings.key_dirs)
                desired = evaluate(inp, datetime.now(UTC)).desired
                if desired is not None and self.metrics is not None:
                    self.metrics.set_probe(probe_desired(desired), time.time())
            except Exception as exc:  # probing is a report; it must not end the daemon
                log.warning("probe.failed", error=repr(exc))
            if stop.wait(settings.probe_interval_s):
                return

    def _stop_optional_services(self) -> None:
        self._stop_services.set()
        if self._pinger is not None:
            self._pinger.stop()
            self._pinger = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._prober is not None:
            self._prober.join(timeout=1)
            self._prober = None

    def _shutdown(self) -> None:
        self._stop_optional_services()
        self._watcher.stop()
        self.notifier.close()
        _close_audit(self.reconciler)
        self._wakeup.close()


def _state_key(revision: str, content_digest: str) -> str:
    """What backoff compares: the revision, and what was read (a git commit does not change
    when a key in key_dirs does, yet that is a new desired state, tried at once)."""
    return f"{revision}+{content_digest}" if content_digest else revision


def _readiness_after(result: PassResult, settings: Settings) -> Readiness:
    from reconciler import records

    last_applied = None
    if not result.ok:  # only then does it matter whether an earlier pass left a verified state
        last_applied = applied_revision(records.load_status(settings.var_dir))
    return decide(result.outcome, result.revision, result.reason, last_applied)


def _close_audit(reconciler: Reconciler) -> None:
    recorder = reconciler.recorder
    if isinstance(recorder, Recorder) and recorder.audit is not None:
        recorder.audit.close()


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
