"""Watching: inotify on STATE, key dirs, targets and the var dir -> pending events, wakeups.

Events are hints. A watch on one directory is read by the daemon's loop itself when it wakes
(`inotify`); a watch on a subtree (a git checkout) through watchdog's threads. Either only
classifies an event and notes it in `PendingEvents` (waking the loop through `Wakeup`); neither
runs a pass. A link created or renamed into place (`..data`, or the STATE link in its parent)
is urgent: the pass starts at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from reconciler.core.layout import RootLayout
from reconciler.daemon.inotify import DirectoryWatches
from reconciler.daemon.pending import PendingEvents, Wakeup
from reconciler.gateway import TargetEvents
from reconciler.source import K8S_DATA, fleet_root, shared_layers
from reconciler.support.logging import get_logger
from reconciler.txn.records import SUSPENDED

if TYPE_CHECKING:
    from collections.abc import Sequence

    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

    from reconciler.config import Settings

__all__ = [
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
    """Classifies one watchdog watch's events into hints for the loop."""

    def __init__(self, spec: WatchSpec, pending: PendingEvents) -> None:
        self.spec = spec
        self._pending = pending

    def dispatch(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        _classify(self.spec, self._pending, event.event_type, src, dest, event.is_directory)


def _classify(
    spec: WatchSpec, pending: PendingEvents, kind: str, src: str, dest: str, is_directory: bool
) -> None:
    """One event of a watch (`kind`: watchdog's event type, or inotify's `gone`) as a hint."""
    names = {os.path.basename(src), os.path.basename(dest)} - {""}
    # A link created or renamed into place is an atomic swap; a directory appearing (a fresh
    # clone) is still being filled and waits for quiet like any other change.
    appeared = kind in ("created", "moved") and not is_directory
    if kind == "gone" or (kind == "deleted" and src == spec.path):
        # The watched directory itself went (git-sync deleted the old worktree): watch anew.
        pending.trouble("watched directory removed")
        return
    if spec.role == "parent":
        if spec.name in names:
            pending.note(urgent=appeared)
        return
    if spec.role == "control":
        if spec.name in names:
            pending.note(urgent=True)
        return
    if spec.role == "target":
        pending.touch(p for p in (src, dest) if p)
        pending.note(urgent=False, target=True)
        return
    urgent = spec.role in ("state", "keys") and appeared and K8S_DATA in names
    pending.note(urgent=urgent)


class Watcher:
    """The inotify watches, kept equal to `watch_specs` of the settings: a directory alone is
    watched by the loop itself (`inotify.DirectoryWatches`, waited on with `wakeup`), a subtree
    (a git checkout) through watchdog's threads."""

    def __init__(
        self, pending: PendingEvents, log_handler: WatchdogLogHandler, wakeup: Wakeup
    ) -> None:
        self._pending = pending
        self._log_handler = log_handler
        self._wakeup = wakeup
        self._observer: BaseObserver | None = None
        self._watches: dict[WatchSpec, ObservedWatch | None] = {}
        """Every watch in place; None for the loop's own (in `_direct`)."""
        self._direct: DirectoryWatches[WatchSpec] | None = None
        self._failed: set[WatchSpec] = set()
        self._watched_at_last_pass: frozenset[str] = frozenset()
        self._watchdog_propagates: bool | None = None

    def drain(self) -> None:
        """Hand the events of the loop's own watches to `pending` (none waiting: nothing)."""
        direct = self._direct
        if direct is None:
            return
        try:
            changes = direct.read()
        except OSError as exc:
            # Its descriptor would stay readable and wake the loop at once, again and again:
            # the watches are set up anew instead (and every target looked at).
            log.warning("watch.trouble", source="inotify", message=str(exc))
            self._pending.trouble("watcher error")
            self.stop()
            return
        for spec, change in changes:
            if spec is None:
                # Events were dropped (a pass wrote more files than the kernel queues): the
                # watches stand, but every one of them may have missed something.
                log.info("watch.overflow", fallback="the next pass looks at everything")
                self._pending.blind()
                self._pending.note(urgent=False)
                continue
            if change.kind == "gone":
                self._watches.pop(spec, None)  # the kernel dropped it
            path = change.path or ""
            _classify(spec, self._pending, change.kind, path, "", change.is_directory)

    def target_events(self, *, look_at_everything: bool) -> TargetEvents | None:
        """What the target watches saw since the last pass began; None: look at every target.

        A watch counts only once it was in place when the previous pass began (and so before
        that pass looked). Called once as each pass begins.
        """
        self.drain()
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
        wanted = set(specs)
        for spec in list(self._watches):
            if spec not in wanted:
                self._unwatch(spec)
        added: list[WatchSpec] = []
        for spec in specs:
            if spec in self._watches:
                continue
            try:
                self._watches[spec] = self._watch(spec)
            except OSError as exc:
                if spec not in self._failed:
                    log.warning("watch.failed", path=spec.path, role=spec.role, error=str(exc))
                self._failed.add(spec)
                continue
            self._failed.discard(spec)
            added.append(spec)
            log.debug("watch.added", path=spec.path, role=spec.role, recursive=spec.recursive)
        return added

    def _watch(self, spec: WatchSpec) -> ObservedWatch | None:
        """One watch in place (OSError when it cannot be): the loop's own when it can be."""
        if not spec.recursive:
            if self._direct is None:
                try:
                    self._direct = DirectoryWatches()
                except OSError as exc:  # out of inotify instances: watchdog's may still do
                    log.debug("watch.direct_unavailable", error=str(exc))
            if self._direct is not None:
                self._direct.add(spec, spec.path)
                self._wakeup.watch(self._direct.fileno())
                return None
        observer = self._watchdog()
        return observer.schedule(
            _EventClassifier(spec, self._pending),  # type: ignore[arg-type]
            spec.path,
            recursive=spec.recursive,
            event_filter=_watched_event_types(),
        )

    def _unwatch(self, spec: WatchSpec) -> None:
        watch = self._watches.pop(spec)
        try:
            if watch is None:
                if self._direct is not None:
                    self._direct.remove(spec)
            elif self._observer is not None:
                self._observer.unschedule(watch)
        except (KeyError, OSError) as exc:
            log.debug("watch.unschedule_failed", path=spec.path, error=str(exc))

    def _watchdog(self) -> BaseObserver:
        """watchdog's observer, started at the first watch that needs it; OSError if it
        cannot start (out of inotify instances, say: passes still run at every resync)."""
        if self._watchdog_propagates is None:
            # watchdog reports trouble only as log lines: they come to us (watch.trouble), and
            # not a second time through logging's last resort.
            watchdog_logger = logging.getLogger("watchdog")
            watchdog_logger.addHandler(self._log_handler)
            self._watchdog_propagates, watchdog_logger.propagate = watchdog_logger.propagate, False
        if self._observer is None:
            from watchdog.observers import Observer

            observer = Observer()
            observer.start()
            self._observer = observer
        return self._observer

    def healthy(self) -> bool:
        """False when an observer or emitter thread died (the loop's own watches have none)."""
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
        direct, self._direct = self._direct, None
        self._watches.clear()
        if direct is not None:
            self._wakeup.unwatch(direct.fileno())
            direct.close()
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
