"""Watching: inotify (through watchdog) on STATE, key dirs and targets -> pending events, wakeups.

Events are hints. Watcher threads only classify an event, note it in `PendingEvents` and wake the
daemon's loop through `Wakeup` (a self-pipe); they never run a pass. A link created or renamed
into place (`..data`, or the STATE link in its parent) is urgent: the pass starts at once.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from reconciler.core.layout import RootLayout
from reconciler.core.schedule import Debounce
from reconciler.gateway import TargetEvents
from reconciler.source import K8S_DATA, fleet_root, shared_layers
from reconciler.support.logging import get_logger
from reconciler.txn.records import SUSPENDED

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

    from reconciler.config import Settings

__all__ = [
    "PendingEvents",
    "Wakeup",
    "WatchSpec",
    "WatchdogLogHandler",
    "Watcher",
    "look_again",
    "watch_specs",
]

log = get_logger("reconciler.watch")

Role = Literal["parent", "state", "keys", "target", "control"]


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
            # A Kubernetes volume changes only by its `..data` swap, seen at the top level; a
            # recursive watch would also wake us for every file the kubelet writes into the
            # next `..TIMESTAMP` directory first (thousands of events, all before the swap).
            volume = os.path.islink(os.path.join(real, K8S_DATA))
            specs.append(WatchSpec(real, not volume, role))

    anchored(settings.state_dir, "state")
    repo = fleet_root(settings.state_dir)
    if repo is not None:  # a fleet gateway: the repository's (git-sync) link and shared layers
        absolute = Path(os.path.abspath(repo))
        specs.append(WatchSpec(str(absolute.parent), False, "parent", absolute.name))
        for layer in shared_layers(repo):
            anchored(layer, "state")
    for key_dir in settings.key_dirs:
        anchored(key_dir, "keys")
    layout = RootLayout(settings.root)
    for target_dir in (*layout.target_dirs, settings.trust_path, layout.secrets):
        if target_dir.is_dir():
            specs.append(WatchSpec(os.path.realpath(target_dir), False, "target"))
    # `reconciler suspend` / `resume` write var_dir/suspended.json: a resume applies at once.
    # Only that name counts; the audit log and status records beside it are ours.
    if settings.var_dir.is_dir():
        specs.append(WatchSpec(os.path.realpath(settings.var_dir), False, "control", SUSPENDED))
    unique: dict[WatchSpec, None] = dict.fromkeys(specs)
    return tuple(unique)


# -- what the watcher threads hand to the loop --------------------------------------------------


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


class WatchdogLogHandler(logging.Handler):
    """watchdog reports an inotify overflow or a failed re-watch only as a log line: a resync."""

    def __init__(self, pending: PendingEvents) -> None:
        super().__init__(logging.WARNING)
        self._pending = pending
        self.stopping = False
        """Set while we stop an observer ourselves: its threads' complaints then are expected."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.stopping or "thread is inactive" in message:
            # watchdog's emitter races its own stop; that is no lost event
            return
        log.warning("watch.trouble", source=record.name, message=message)
        self._pending.trouble("overflow" if "overflow" in message else "watcher error")


# -- watches ------------------------------------------------------------------------------------


def _watched_event_types() -> list[type[FileSystemEvent]]:
    from watchdog import events as e

    # Opens and reads are left out: every pass reads STATE and the targets, and must not wake
    # itself up again.
    return [
        e.FileCreatedEvent, e.DirCreatedEvent, e.FileDeletedEvent, e.DirDeletedEvent,
        e.FileModifiedEvent, e.DirModifiedEvent, e.FileMovedEvent, e.DirMovedEvent,
        e.FileClosedEvent, e.FileAttribEvent, e.DirAttribEvent,
    ]  # fmt: skip


class _EventClassifier:
    """Classifies one watch's events into hints for the loop."""

    def __init__(self, spec: WatchSpec, pending: PendingEvents) -> None:
        self.spec = spec
        self._pending = pending

    def dispatch(self, event: FileSystemEvent) -> None:
        spec = self.spec
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        names = {os.path.basename(src), os.path.basename(dest)} - {""}
        # A link created or renamed into place is an atomic swap; a directory appearing (a fresh
        # clone) is still being filled and waits for quiet like any other change.
        appeared = event.event_type in ("created", "moved") and not event.is_directory
        if spec.role == "parent":
            if spec.name in names:
                self._pending.note(urgent=appeared)
            return
        if spec.role == "control":
            if spec.name in names:
                self._pending.note(urgent=True)
            return
        if event.event_type == "deleted" and src == spec.path:
            # The watched directory itself went (git-sync deleted the old worktree): watch anew.
            self._pending.trouble("watched directory removed")
            return
        if spec.role == "target":
            self._pending.touch(p for p in (src, dest) if p)
            self._pending.note(urgent=False, target=True)
            return
        urgent = spec.role in ("state", "keys") and appeared and K8S_DATA in names
        self._pending.note(urgent=urgent)


class Watcher:
    """The inotify watches (through watchdog), kept equal to `watch_specs` of the settings."""

    def __init__(self, pending: PendingEvents, log_handler: WatchdogLogHandler) -> None:
        self._pending = pending
        self._log_handler = log_handler
        self._observer: BaseObserver | None = None
        self._watches: dict[WatchSpec, ObservedWatch] = {}
        self._failed: set[WatchSpec] = set()
        self._watched_at_last_pass: frozenset[str] = frozenset()
        self._watchdog_propagates: bool | None = None

    def target_events(self, *, look_at_everything: bool) -> TargetEvents | None:
        """What the target watches saw since the last pass began; None: look at every target.

        A watch counts only once it was in place when the previous pass began (and so before
        that pass looked). Called once as each pass begins.
        """
        touched = self._pending.take_touched()
        watched = self.target_paths()
        steady = watched & self._watched_at_last_pass
        self._watched_at_last_pass = watched
        if touched is None or look_at_everything:
            return None
        return TargetEvents(steady, touched)

    def establish(self, specs: tuple[WatchSpec, ...]) -> list[WatchSpec]:
        """Add and remove watches to match `specs`; the watches added (events may have been
        missed there, so the caller should look once more)."""
        if self._watchdog_propagates is None:
            # watchdog reports trouble only as log lines: they come to us (watch.trouble), and
            # not a second time through logging's last resort.
            watchdog_logger = logging.getLogger("watchdog")
            watchdog_logger.addHandler(self._log_handler)
            self._watchdog_propagates, watchdog_logger.propagate = watchdog_logger.propagate, False
        if self._observer is None:
            from watchdog.observers import Observer

            try:
                observer = Observer()
                observer.start()
            except OSError as exc:
                # Out of inotify instances, say: passes still run at every resync, which retries.
                log.error("watch.unavailable", error=str(exc), fallback="a pass at every resync")
                return []
            self._observer = observer
        observer = self._observer
        wanted = set(specs)
        for spec in list(self._watches):
            if spec not in wanted:
                try:
                    observer.unschedule(self._watches.pop(spec))
                except (KeyError, OSError) as exc:
                    log.debug("watch.unschedule_failed", path=spec.path, error=str(exc))
        added: list[WatchSpec] = []
        for spec in specs:
            if spec in self._watches:
                continue
            try:
                self._watches[spec] = observer.schedule(
                    _EventClassifier(spec, self._pending),  # type: ignore[arg-type]
                    spec.path,
                    recursive=spec.recursive,
                    event_filter=_watched_event_types(),
                )
            except OSError as exc:
                if spec not in self._failed:
                    log.warning("watch.failed", path=spec.path, role=spec.role, error=str(exc))
                self._failed.add(spec)
                continue
            self._failed.discard(spec)
            added.append(spec)
            log.debug("watch.added", path=spec.path, role=spec.role, recursive=spec.recursive)
        return added

    def healthy(self) -> bool:
        """False when an observer or emitter thread died. Without an observer (none could be
        started) there is nothing to restart before the next resync retries it."""
        observer = self._observer
        if observer is None:
            return True
        if not observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in list(observer.emitters))

    def target_paths(self) -> frozenset[str]:
        """The target directories (real paths) watched now."""
        return frozenset(spec.path for spec in self._watches if spec.role == "target")

    def restart(self, specs: tuple[WatchSpec, ...]) -> None:
        self.stop()
        self._pending.blind()
        self.establish(specs)

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.clear()
        if observer is not None:
            self._log_handler.stopping = True
            try:
                observer.stop()
                observer.join(timeout=5)
            finally:
                self._log_handler.stopping = False

    def close(self) -> None:
        """Stop watching for good, and give watchdog's log lines back to logging."""
        self.stop()
        if self._watchdog_propagates is not None:
            watchdog_logger = logging.getLogger("watchdog")
            watchdog_logger.removeHandler(self._log_handler)
            watchdog_logger.propagate = self._watchdog_propagates
            self._watchdog_propagates = None


# -- the loop -----------------------------------------------------------------------------------


def look_again(pending: PendingEvents, added: Sequence[WatchSpec]) -> None:
    """New watches (a new worktree, a directory that appeared): what happened there before they
    existed was not seen, so look once more after the quiet period. In a new target directory
    (one a pass just created) every file is looked at as if an event named it, so the pass's own
    files start no pass; the var dir's watch matters only for a suspension."""
    for spec in added:
        if spec.role == "target":
            try:
                names = os.listdir(spec.path)
            except OSError:
                pending.note(urgent=False)
                continue
            pending.touch(f"{spec.path}/{name}" for name in names)
            pending.note(urgent=False, target=True)
        elif spec.role != "control" or os.path.lexists(os.path.join(spec.path, SUSPENDED)):
            pending.note(urgent=False)
