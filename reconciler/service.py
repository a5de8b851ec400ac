"""Operations around the daemon loop: systemd notify, Prometheus metrics (served by `health`).

The daemon (`reconciler.daemon`) feeds pass results in; this module only reports them. Nothing
here decides what a pass does, and nothing here can stop the loop: a broken metrics client or a
vanished notify socket costs a log line, never a pass.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.logging import get_logger
from reconciler.redact import scrub

if TYPE_CHECKING:
    from reconciler.app import PassResult
    from reconciler.probe import ProbeResult
    from reconciler.settings import Settings

__all__ = [
    "CertExpiry",
    "Metrics",
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


# -- metrics --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertExpiry:
    """One applied certificate's expiry, for the expiry gauge."""

    kind: str
    name: str
    subject: str
    not_after: float
    """Seconds since the epoch."""


_PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_HOOK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The daemon's Prometheus metrics, in a registry of their own (no process-global state)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter(
            "reconciler_passes", "Passes run, by outcome.", ["outcome"], registry=r
        )
        self.changes = Counter(
            "reconciler_changes", "Target changes applied, by kind and action.",
            ["kind", "action"], registry=r,
        )  # fmt: skip
        self.drift = Counter(
            "reconciler_drift_corrections",
            "Targets changed by someone else and restored, by kind.",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "reconciler_rejected_states", "Distinct desired states rejected as invalid.", registry=r
        )
        self.pass_duration = Histogram(
            "reconciler_pass_duration_seconds",
            "Wall time of a pass, including hooks and verification.",
            buckets=_PASS_BUCKETS,
            registry=r,
        )
        self.hook_duration = Histogram(
            "reconciler_hook_duration_seconds",
            "Wall time of one hook command, by hook.",
            ["hook"],
            buckets=_HOOK_BUCKETS,
            registry=r,
        )
        self.last_pass = Gauge(
            "reconciler_last_pass_timestamp_seconds", "When the last pass ended.", registry=r
        )
        self.last_ok = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "When a pass last ended converged or with no change.",
            registry=r,
        )
        self.ready = Gauge(
            "reconciler_ready", "1 when the last pass converged or found nothing to do.", registry=r
        )
        self.suspended = Gauge("reconciler_suspended", "1 while applying is suspended.", registry=r)
        self.cert_expiry = Gauge(
            "reconciler_certificate_expiry_timestamp_seconds",
            "notAfter of each applied certificate (identity leaf and trust entries).",
            ["kind", "name", "subject"],
            registry=r,
        )
        self.probe_trusted = Gauge(
            "reconciler_probe_trusted",
            "1 when the profile's server is trusted by the desired store, else 0.",
            ["profile", "status"],
            registry=r,
        )
        self.probe_time = Gauge(
            "reconciler_probe_timestamp_seconds", "When the last profile probe ended.", registry=r
        )
        self._rejections: set[tuple[str, str | None]] = set()
        self._lock = threading.Lock()

    def observe_pass(
        self, result: PassResult, duration_s: float, now: float, *, suspended: bool
    ) -> None:
        with self._lock:
            self.passes.labels(result.outcome).inc()
            self.pass_duration.observe(duration_s)
            self.last_pass.set(now)
            self.suspended.set(1 if suspended else 0)
            self.ready.set(1 if result.ok else 0)
            if result.ok:
                self.last_ok.set(now)
            if result.outcome == "rejected":
                key = (result.revision, result.reason)
                if key not in self._rejections:
                    self._rejections.add(key)
                    self.rejected.inc()
            if result.outcome == "converged" and result.plan is not None:
                for change in result.plan.changes:
                    self.changes.labels(change.kind, change.action).inc()
                    if change.cause == "drift":
                        self.drift.labels(change.kind).inc()
            for hook in result.hooks:
                self.hook_duration.labels(hook.hook).observe(hook.duration_ms / 1000)

    def set_expiry(self, entries: Iterable[CertExpiry]) -> None:
        with self._lock:
            self.cert_expiry.clear()
            for entry in entries:
                # Names and subjects come from pushed files: through the output boundary.
                name, subject = scrub(entry.name), scrub(entry.subject)
                self.cert_expiry.labels(entry.kind, name, subject).set(entry.not_after)

    def set_probe(self, results: Iterable[ProbeResult], now: float) -> None:
        with self._lock:
            self.probe_trusted.clear()
            for result in results:
                trusted = 1 if result.status in ("trusted", "skipped") else 0
                self.probe_trusted.labels(scrub(result.name), result.status).set(trusted)
            self.probe_time.set(now)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        with self._lock:
            return bytes(generate_latest(self.registry))


def applied_expiry(settings: Settings) -> list[CertExpiry]:
    """The certificates as applied: ROOT/data/cert.pem's leaf and every managed trust file.

    Read from the targets rather than the desired state, so the gauge shows what the gateway
    serves even while a newer desired state is rejected or suspended.
    """
    from reconciler.truststore import certificates_in, managed_files

    found: list[CertExpiry] = []
    leaf = settings.root / "data" / "cert.pem"
    for cert in certificates_in(leaf)[:1]:
        found.append(
            CertExpiry(
                "identity", "leaf", cert.subject.rfc4514_string(),
                cert.not_valid_after_utc.timestamp(),
            )
        )  # fmt: skip
    for entry, path in managed_files(settings.trust_path, settings.trust_prefix).items():
        for cert in certificates_in(path):
            found.append(
                CertExpiry(
                    "trust", entry, cert.subject.rfc4514_string(),
                    cert.not_valid_after_utc.timestamp(),
                )
            )  # fmt: skip
    return found
