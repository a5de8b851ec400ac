"""Around the daemon loop: systemd notify, the supervised helper threads, and pass reports.

The daemon (`reconciler.daemon.loop`) feeds pass results in; this module only reports them and runs
the helpers beside the loop (the metrics and health server, the profile prober, the systemd
watchdog pinger). Nothing here decides what a pass does, and nothing here can stop the loop: a
broken metrics client or a vanished notify socket costs a log line, never a pass.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from reconciler.audit import HeadPublisher
from reconciler.core.outcome import Outcome
from reconciler.daemon.metrics import CertExpiry, Metrics, applied_expiry
from reconciler.daemon.readiness import NOT_YET, Readiness, applied_revision, decide
from reconciler.support.logging import get_logger
from reconciler.support.redact import scrub_line
from reconciler.txn import records

if TYPE_CHECKING:
    from pathlib import Path

    from reconciler.audit import AuditLog, Head
    from reconciler.config import Settings
    from reconciler.daemon.http import HealthServer
    from reconciler.reconcile import PassResult

__all__ = [
    "CertExpiry",
    "Liveness",
    "Metrics",
    "PassReporter",
    "Services",
    "SystemdNotifier",
    "WatchdogPinger",
    "applied_expiry",
]

log = get_logger("reconciler.service")

# -- systemd notify -------------------------------------------------------------------------------


class SystemdNotifier:
    """sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET.

    Without NOTIFY_SOCKET (not under systemd, or Type= is not notify) every call does nothing.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = environ if environ is not None else dict(os.environ)
        address = env.get("NOTIFY_SOCKET") or None
        # systemd's abstract-namespace sockets are written with a leading '@'.
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self.watchdog_interval_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send `KEY=VALUE` lines as one message; False when not under systemd or it failed."""
        if self._address is None:
            return False
        message = "\n".join(line.replace("\n", " ") for line in lines).encode()
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                # Never block the loop on a reader that does not read (a full datagram queue):
                # a lost STATUS is harmless, a frozen loop is not.
                self._socket.sendto(message, socket.MSG_DONTWAIT, self._address)
            except OSError as exc:
                log.warning("systemd.notify_failed", socket=self._address, error=str(exc))
                return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _watchdog_interval(env: dict[str, str]) -> float | None:
    """Half of WATCHDOG_USEC (systemd's advice), when the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


class WatchdogPinger:
    """Sends WATCHDOG=1 every half watchdog period while `healthy()` says the loop is alive.

    A stuck loop stops the pings, so systemd kills and restarts the service: the pinger must never
    ping on the loop's behalf without asking it.
    """

    def __init__(
        self, notifier: SystemdNotifier, interval_s: float, healthy: Callable[[], bool]
    ) -> None:
        self._notifier = notifier
        self._interval = interval_s
        self._healthy = healthy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._healthy():
                self._notifier.notify("WATCHDOG=1")
            else:
                log.error("systemd.watchdog_withheld", reason="the reconcile loop is stuck")


# -- the helpers beside the loop --------------------------------------------------------------


class Liveness:
    """Whether the loop is alive: it runs, and no pass has gone on far longer than it may.

    What the watchdog pinger and /healthz ask; the loop marks each pass's start and end.
    """

    def __init__(self, stall_limit_s: Callable[[], float]) -> None:
        self._stall_limit_s = stall_limit_s
        self._in_pass_since: float | None = None
        self._alive = True

    def pass_started(self, now: float) -> None:
        self._in_pass_since = now

    def pass_ended(self) -> None:
        self._in_pass_since = None

    def stopped(self) -> None:
        self._alive = False

    def healthy(self) -> bool:
        if not self._alive:
            return False
        started = self._in_pass_since
        return started is None or time.monotonic() - started < self._stall_limit_s()


class Services:
    """The metrics and health server, the profile prober and the watchdog pinger, started and
    stopped together (again at a settings reload). Each only reads what the loop published."""

    def __init__(
        self,
        notifier: SystemdNotifier,
        healthy: Callable[[], bool],
        readiness: Callable[[], tuple[bool, str]],
    ) -> None:
        self.notifier = notifier
        self.metrics: Metrics | None = None
        self._healthy = healthy
        self._readiness = readiness
        self._server: HealthServer | None = None
        self._pinger: WatchdogPinger | None = None
        self._prober: threading.Thread | None = None
        self._stop = threading.Event()
        self.heads = HeadPublisher(on_head=self._head_published, on_failure=self._witness_failed)
        """Publishes the audit log's head; `close` it last, it may have a witness running."""

    def start(self, settings: Settings) -> None:
        """The metrics and health server, and the prober, when the settings ask for them; the
        witness command the settings name."""
        self._stop = threading.Event()
        self.heads.configure(settings.audit.witness, settings.audit.witness_timeout_s)
        address = settings.metrics_address
        if address is None:
            return
        from reconciler.daemon.http import HealthServer

        if self.metrics is None:
            self.metrics = Metrics.for_settings(settings)
        try:
            self._server = HealthServer(address, self.metrics, self._healthy, self._readiness)
        except OSError as exc:
            log.error("metrics.bind_failed", address=address, error=str(exc))
            return
        self._server.start()
        log.info("metrics.listening", address=address)
        if settings.probe_interval_s > 0:
            self._prober = threading.Thread(
                target=self._probe_loop, args=(settings,), name="profile-probe", daemon=True
            )
            self._prober.start()

    def publish_head(self, audit: AuditLog | None, appended_before: int | None = None) -> None:
        """Publish the audit log's head: at start or after a reload (`appended_before` None), or
        after a pass that appended records (the writer's count before it differs)."""
        head = audit.head if audit is not None and audit.appended != appended_before else None
        if head is not None:
            self.heads.submit(head)

    def _head_published(self, head: Head) -> None:
        if self.metrics is not None:
            self.metrics.audit.published(head)

    def _witness_failed(self) -> None:
        if self.metrics is not None:
            self.metrics.audit.witness_failed()

    def start_pinger(self) -> None:
        """The watchdog pinger, when systemd asked for one (once the daemon is ready)."""
        interval = self.notifier.watchdog_interval_s
        if interval is None or not self.notifier.enabled:
            return
        self._pinger = WatchdogPinger(self.notifier, interval, self._healthy)
        self._pinger.start()

    def stop(self) -> None:
        self._stop.set()
        if self._pinger is not None:
            self._pinger.stop()
            self._pinger = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._prober is not None:
            self._prober.join(timeout=1)
            self._prober = None

    def _probe_loop(self, settings: Settings) -> None:
        from datetime import UTC, datetime

        from reconciler.core.evaluate import evaluate
        from reconciler.probe import probe_desired
        from reconciler.source import read_snapshot

        stop = self._stop
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


# -- pass reports -----------------------------------------------------------------------------


class PassReporter:
    """Tells the log, systemd, readiness and the metrics how each pass ended."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.last: PassResult | None = None
        self.readiness: Readiness = NOT_YET
        """Decided once per pass: whether a verified configuration is in place (/readyz)."""

    def report(
        self, result: PassResult, trigger: str, duration_s: float, settings: Settings
    ) -> None:
        """In the order a watcher relies on: the metrics, then /readyz, then the log line and
        systemd's status. Whoever sees a pass in one finds it in those set before."""
        self.last = result
        readiness = _readiness_after(result, settings.var_dir)
        suspended = records.load_suspension(settings.var_dir) is not None
        metrics = self._services.metrics
        if metrics is not None:
            metrics.observe_pass(
                result, duration_s, time.time(), suspended=suspended, ready=readiness.ready
            )
            if result.ok:
                metrics.set_expiry(applied_expiry(settings))
        self.readiness = readiness
        changes = result.plan.changes if result.plan is not None else ()
        fields: dict[str, object] = {
            "outcome": result.outcome,
            "revision": result.revision,
            "trigger": trigger,
            "changes": len(changes) if result.outcome is not Outcome.NO_CHANGE else 0,
            "duration_ms": round(duration_s * 1000),
        }
        if result.reason and result.outcome is not Outcome.SUSPENDED:
            fields["reason"] = result.reason
        level: Literal["info", "warning"] = "info" if result.ok else "warning"
        log.log(level, "pass.finished", **fields)
        self._services.notifier.notify(self.status_line(settings.var_dir, suspended))

    def status_line(self, var_dir: Path, suspended: bool | None = None) -> str:
        """systemd's STATUS= line: the last pass, and a suspension."""
        if suspended is None:
            suspended = records.load_suspension(var_dir) is not None
        last = self.last
        if last is None:
            text = "no pass completed yet"
        else:
            text = f"{last.outcome} at revision {last.revision}"
            if last.outcome is Outcome.SUSPENDED and last.plan is not None:
                text = f"suspended: {len(last.plan.changes)} change(s) pending at {last.revision}"
            elif last.reason and not last.ok:
                text += f": {last.reason}"
        if suspended and not text.startswith("suspended"):
            text = f"suspended; {text}"
        # `systemctl status` shows it on a terminal: through the boundary, on one line.
        return "STATUS=" + scrub_line(text[:200])


def _readiness_after(result: PassResult, var_dir: Path) -> Readiness:
    last_applied = None
    if not result.ok:  # only then does it matter whether an earlier pass left a verified state
        last_applied = applied_revision(records.load_status(var_dir))
    return decide(result.outcome, result.revision, result.reason, last_applied)
