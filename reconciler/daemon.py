"""The daemon: watch (events are hints) -> debounce -> one level-triggered pass -> report; repeat.

Threads
    * main: the loop. It sleeps in `select` on a self-pipe until the earliest deadline (debounce,
      backoff retry or resync), runs passes, handles signals (their handlers only set flags; the
      wakeup fd interrupts the sleep), and alone touches the Reconciler, the lock and the watches.
    * watchdog's observer threads: classify each inotify event and note it in `_Pending`, then
      write one byte to the self-pipe. They never run a pass.
    * optional: the metrics HTTP server, the systemd watchdog pinger and the profile prober; each
      only reads what the loop published.

Every pass is `Reconciler.run_pass()`: the whole desired state against the whole set of targets,
whatever the event was. So a lost or spurious event costs at most one extra pass, and the pass
after our own writes finds nothing to do (`no-change` writes only to var_dir, which is not
watched), so our writes never feed a loop.

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

import logging
import os
import selectors
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Literal, cast

from reconciler.core.backoff import Backoff, Debounce, next_deadline
from reconciler.errors import LockHeldError, ReconcilerError, SettingsError
from reconciler.logging import Recorder, configure_logging, get_logger

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

    from reconciler.app import PassResult, Reconciler
    from reconciler.service import HealthServer, Metrics, SystemdNotifier, WatchdogPinger
    from reconciler.settings import Settings

__all__ = ["Daemon", "WatchSpec", "run_daemon", "watch_specs"]

log = get_logger("reconciler.daemon")

K8S_DATA = "..data"
#: How long one pass waits for another reconciler (`reconciler apply`) to release the ROOT lock.
LOCK_WAIT_S = 600.0
#: Beyond its hooks, lock wait and verification, a pass this much longer is taken as stuck.
STALL_MARGIN_S = 300.0

Role = Literal["parent", "state", "keys", "target"]


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """One inotify watch: a directory, whether its subtree is watched, and what events mean."""

    path: str
    recursive: bool
    role: Role
    name: str | None = None
    """For `parent`: the one entry that matters (the STATE link or a missing path's next part)."""


def watch_specs(settings: Settings) -> tuple[WatchSpec, ...]:
    """The watches for these settings, with links resolved now (re-computed after every pass)."""
    specs: list[WatchSpec] = []

    def anchored(path: Path, role: Role) -> None:
        # The entry in its parent first: a git-sync swap replaces the link itself, and a missing
        # STATE shows up there when it is created.
        absolute = Path(os.path.abspath(path))
        parent, name = absolute.parent, absolute.name
        while not parent.is_dir() and parent != parent.parent:
            parent, name = parent.parent, parent.name
        specs.append(WatchSpec(str(parent), False, "parent", name))
        real = os.path.realpath(absolute)
        if os.path.isdir(real):
            specs.append(WatchSpec(real, True, role))

    anchored(settings.state_dir, "state")
    for key_dir in settings.key_dirs:
        anchored(key_dir, "keys")
    for target_dir in (settings.root / "data", settings.root / "nginx", settings.trust_path):
        if target_dir.is_dir():
            specs.append(WatchSpec(os.path.realpath(target_dir), False, "target"))
    unique: dict[WatchSpec, None] = dict.fromkeys(specs)
    return tuple(unique)


# -- what the watcher threads hand to the loop --------------------------------------------------


class _Wakeup:
    """A self-pipe: any thread, and signal delivery (set_wakeup_fd), ends the loop's sleep."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.read_fd, selectors.EVENT_READ)

    def notify(self) -> None:
        try:
            os.write(self.write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake already

    def wait(self, timeout: float | None) -> None:
        self._selector.select(timeout)
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._selector.close()
        os.close(self.read_fd)
        os.close(self.write_fd)


class _Pending:
    """Events noted since the last pass, and watcher trouble; shared with observer threads."""

    def __init__(self, quiet_s: float, max_wait_s: float, wakeup: _Wakeup) -> None:
        self._lock = threading.Lock()
        self._debounce = Debounce(quiet_s, max_wait_s)
        self._trouble: str | None = None
        self._wakeup = wakeup

    def note(self, *, urgent: bool) -> None:
        with self._lock:
            self._debounce = self._debounce.note(time.monotonic(), urgent=urgent)
        self._wakeup.notify()

    def trouble(self, reason: str) -> None:
        with self._lock:
            self._trouble = self._trouble or reason
        self._wakeup.notify()

    def retime(self, quiet_s: float, max_wait_s: float) -> None:
        with self._lock:
            current = self._debounce
            self._debounce = Debounce(
                quiet_s, max_wait_s, current.first_at, current.last_at, current.urgent
            )

    def due_at(self) -> float | None:
        with self._lock:
            return self._debounce.due_at()

    def take(self) -> None:
        """A pass starts now: it covers every event so far."""
        with self._lock:
            self._debounce = self._debounce.cleared()

    def take_trouble(self) -> str | None:
        with self._lock:
            reason, self._trouble = self._trouble, None
            return reason


class _WatchdogLogHandler(logging.Handler):
    """watchdog reports an inotify overflow or a failed re-watch only as a log line: a resync."""

    def __init__(self, pending: _Pending) -> None:
        super().__init__(logging.WARNING)
        self._pending = pending

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        log.warning("watch.trouble", source=record.name, message=message)
        self._pending.trouble("overflow" if "overflow" in message else "watcher error")


# -- watches ------------------------------------------------------------------------------------


def _event_types() -> list[type[FileSystemEvent]]:
    from watchdog import events as e

    # Opens and reads are left out: every pass reads STATE and the targets, and must not wake
    # itself up again.
    return [
        e.FileCreatedEvent, e.DirCreatedEvent, e.FileDeletedEvent, e.DirDeletedEvent,
        e.FileModifiedEvent, e.DirModifiedEvent, e.FileMovedEvent, e.DirMovedEvent,
        e.FileClosedEvent, e.FileAttribEvent, e.DirAttribEvent,
    ]  # fmt: skip


class _Handler:
    """Classifies one watch's events into hints for the loop."""

    def __init__(self, spec: WatchSpec, pending: _Pending) -> None:
        self.spec = spec
        self._pending = pending

    def dispatch(self, event: FileSystemEvent) -> None:
        spec = self.spec
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        names = {os.path.basename(src), os.path.basename(dest)} - {""}
        appeared = event.event_type in ("created", "moved")
        if spec.role == "parent":
            if spec.name in names:
                self._pending.note(urgent=appeared)
            return
        if event.event_type == "deleted" and src == spec.path:
            # The watched directory itself went (git-sync deleted the old worktree): watch anew.
            self._pending.trouble("watched directory removed")
            return
        urgent = spec.role in ("state", "keys") and appeared and K8S_DATA in names
        self._pending.note(urgent=urgent)


class Watcher:
    """The inotify watches (through watchdog), kept equal to `watch_specs` of the settings."""

    def __init__(self, pending: _Pending) -> None:
        self._pending = pending
        self._observer: BaseObserver | None = None
        self._watches: dict[WatchSpec, ObservedWatch] = {}
        self._failed: set[WatchSpec] = set()

    def establish(self, specs: tuple[WatchSpec, ...]) -> bool:
        """Add and remove watches to match `specs`; True when a watch was added (events may have
        been missed there, so the caller should look once more)."""
        if self._observer is None:
            from watchdog.observers import Observer

            self._observer = Observer()
            self._observer.start()
        observer = self._observer
        wanted = set(specs)
        for spec in list(self._watches):
            if spec not in wanted:
                try:
                    observer.unschedule(self._watches.pop(spec))
                except (KeyError, OSError) as exc:
                    log.debug("watch.unschedule_failed", path=spec.path, error=str(exc))
        added = False
        for spec in specs:
            if spec in self._watches:
                continue
            try:
                self._watches[spec] = observer.schedule(
                    _Handler(spec, self._pending),  # type: ignore[arg-type]
                    spec.path,
                    recursive=spec.recursive,
                    event_filter=_event_types(),
                )
            except OSError as exc:
                if spec not in self._failed:
                    log.warning("watch.failed", path=spec.path, role=spec.role, error=str(exc))
                self._failed.add(spec)
                continue
            self._failed.discard(spec)
            added = True
            log.debug("watch.added", path=spec.path, role=spec.role, recursive=spec.recursive)
        return added

    def healthy(self) -> bool:
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in list(observer.emitters))

    def restart(self, specs: tuple[WatchSpec, ...]) -> None:
        self.stop()
        self.establish(specs)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.clear()
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)


# -- the loop -----------------------------------------------------------------------------------


class Daemon:
    """The reconcile loop of `reconciler run` (SPEC section 7)."""

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
        self._wakeup = _Wakeup()
        self._pending = _Pending(
            settings.quiet_period_ms / 1000, settings.max_wait_ms / 1000, self._wakeup
        )
        self._watcher = Watcher(self._pending)
        self._backoff = Backoff()
        self._resync_at = 0.0
        self._stopping = False
        self._reload = False
        self._force: str | None = None
        self._in_pass_since: float | None = None
        self._alive = True
        self._last: PassResult | None = None
        self._suspended_seen: set[tuple[str, tuple[tuple[str, str, str], ...]]] = set()
        self.metrics: Metrics | None = None
        self._server: HealthServer | None = None
        self._pinger: WatchdogPinger | None = None
        self._prober: threading.Thread | None = None
        self._stop_services = threading.Event()
        self._log_handler = _WatchdogLogHandler(self._pending)

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0)."""
        previous = self._install_signals()
        watchdog_logger = logging.getLogger("watchdog")
        watchdog_logger.addHandler(self._log_handler)
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
            self.notifier.notify("READY=1", self._status_line())
            self._start_pinger()
            while not self._stopping:
                self._step()
        finally:
            self._alive = False
            self.notifier.notify("STOPPING=1", "STATUS=stopping")
            self._shutdown()
            watchdog_logger.removeHandler(self._log_handler)
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
        last = self._last
        if last is None:
            return False, "no pass has finished yet"
        if last.ok:
            return True, f"{last.outcome} at revision {last.revision}"
        return False, f"{last.outcome} at revision {last.revision}: {last.reason or ''}".rstrip()

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
            return read_snapshot(self.settings.state_dir, self.settings.key_dirs).revision
        except Exception:  # a peek must never stop the loop; the pass reports the problem
            return None

    def _retry_in(self, now: float) -> float | None:
        at = self._backoff.retry_at
        return None if at is None else round(at - now, 1)

    def _cycle(self, trigger: str) -> None:
        """One pass: recover, run, report. Never raises for bad input or a failing pass."""
        self._pending.take()
        started = time.monotonic()
        self._in_pass_since = started
        result: PassResult | None = None
        try:
            result = self._locked_pass(trigger)
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
        self._backoff = self._backoff.after_pass(
            result.outcome, result.revision, ended, self._cap()
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

    def _locked_pass(self, trigger: str) -> PassResult | None:
        with self._lock_held() as held:
            if not held:
                return None
            recovered = self.reconciler.recover()
            if recovered is not None:
                log.warning("recovery.result", outcome=recovered.outcome, reason=recovered.reason)
            result = self.reconciler.run_pass()
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
            self.metrics.observe_pass(result, duration_s, time.time(), suspended=suspended)
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
        from reconciler.settings import load_settings

        config, state, root = self._flags
        try:
            settings = load_settings(config, state_dir=state, root=root)
        except SettingsError as exc:
            log.error("settings.reload_failed", error=str(exc), keeping="the previous settings")
            return
        nginx.clear_cache()
        previous = self.reconciler
        self.settings = settings
        configure_logging(settings.log_format)
        self.reconciler = self._make_reconciler(settings)
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
        from reconciler.app import Recorder as PassRecorder
        from reconciler.audit import AuditLog

        # logging.Recorder.record takes the audit Event literal where app's protocol says str;
        # the events app records are all Events (app.Recorder could say so: see the report).
        recorder = cast(PassRecorder, Recorder(AuditLog(settings.audit_path)))
        return Reconciler(settings, recorder)

    # -- services -------------------------------------------------------------------------------

    def _start_services(self) -> None:
        self._stop_services = threading.Event()
        address = self.settings.metrics_address
        if address is None:
            return
        from reconciler.service import HealthServer, Metrics

        if self.metrics is None:
            self.metrics = Metrics()
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
