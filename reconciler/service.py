"""Operations around the daemon loop: systemd notify; the metrics live in `reconciler.metrics`.

The daemon (`reconciler.daemon`) feeds pass results in; this module only reports them. Nothing
here decides what a pass does, and nothing here can stop the loop: a broken metrics client or a
vanished notify socket costs a log line, never a pass.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

from reconciler.logging import get_logger
from reconciler.metrics import CertExpiry, Metrics, applied_expiry

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
