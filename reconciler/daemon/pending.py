"""What the watches hand to the daemon's loop: the events noted since the last pass, and a
wakeup that ends the loop's sleep.

Watcher threads (watchdog's) and the loop itself (its own inotify watches) only note events in
`PendingEvents` and wake the loop through `Wakeup`; they never run a pass. `Debounce` decides
when the noted events are due.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections.abc import Iterable

from reconciler.core.schedule import Debounce

__all__ = ["PendingEvents", "Wakeup"]


class Wakeup:
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

    def watch(self, fd: int) -> None:
        """Also end the sleep when `fd` is readable (an inotify descriptor the loop reads)."""
        if fd not in self._selector.get_map():
            self._selector.register(fd, selectors.EVENT_READ)

    def unwatch(self, fd: int) -> None:
        if fd in self._selector.get_map():
            self._selector.unregister(fd)

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


class PendingEvents:
    """Events noted since the last pass, and watcher trouble; shared with observer threads."""

    def __init__(self, quiet_s: float, max_wait_s: float, wakeup: Wakeup) -> None:
        self._lock = threading.Lock()
        self._debounce = Debounce(quiet_s, max_wait_s)
        self._trouble: str | None = None
        self._wakeup = wakeup
        self._touched: set[str] = set()
        self._blind = True
        """Events in the target directories may have been lost since the last take_touched."""
        self._elsewhere = False
        """An event outside the target directories (or a request for a pass) since the last
        take: only then is a pass certainly due."""

    def note(self, *, urgent: bool, target: bool = False) -> None:
        """An event (`target`: in a target directory, and `touch` named its paths)."""
        with self._lock:
            self._debounce = self._debounce.note(time.monotonic(), urgent=urgent)
            self._elsewhere = self._elsewhere or not target
        self._wakeup.notify()

    def trouble(self, reason: str) -> None:
        with self._lock:
            self._trouble = self._trouble or reason
            self._blind = True
        self._wakeup.notify()

    def touch(self, paths: Iterable[str]) -> None:
        """An event named these paths in a target directory."""
        with self._lock:
            self._touched.update(paths)

    def blind(self) -> None:
        """Target events may be missing (the watches were replaced): trust none of them."""
        with self._lock:
            self._blind = True

    def take_touched(self) -> frozenset[str] | None:
        """The target paths with an event since the last take, or None when some may be lost."""
        with self._lock:
            touched, blind = frozenset(self._touched), self._blind
            self._touched.clear()
            self._blind = False
        return None if blind else touched

    def retime(self, quiet_s: float, max_wait_s: float) -> None:
        with self._lock:
            current = self._debounce
            self._debounce = Debounce(
                quiet_s, max_wait_s, current.first_at, current.last_at, current.urgent
            )

    def due_at(self) -> float | None:
        with self._lock:
            return self._debounce.due_at()

    def take(self) -> bool:
        """A pass starts now: it covers every event so far. True when every event since the
        last take was in a target directory (what `touch` named is all there is to look at)."""
        with self._lock:
            self._debounce = self._debounce.cleared()
            targets_only, self._elsewhere = not self._elsewhere, False
        return targets_only

    def take_trouble(self) -> str | None:
        with self._lock:
            reason, self._trouble = self._trouble, None
            return reason
