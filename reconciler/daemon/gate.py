"""Whether a pass may run now: the ROOT lock waited for, and events that are only the last
pass's own writes (which start no pass)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reconciler.config import Settings
from reconciler.core.render import Target
from reconciler.daemon.pending import PendingEvents
from reconciler.errors import LockHeldError
from reconciler.reconcile import Caches, targets_as_left
from reconciler.support.logging import get_logger
from reconciler.txn import RootLock

__all__ = ["LOCK_WAIT_S", "lock_for_pass", "own_writes_only"]

log = get_logger("reconciler.daemon")

#: How long one pass waits for another reconciler (`reconciler apply`) to release the ROOT lock.
LOCK_WAIT_S = 600.0


@contextmanager
def lock_for_pass(lock: RootLock, stopping: Callable[[], bool]) -> Iterator[bool]:
    """The ROOT lock for one pass; waits for `reconciler apply`, gives up when stopping."""
    deadline = time.monotonic() + LOCK_WAIT_S
    waited = False
    while True:
        try:
            lock.acquire(1.0)
            break
        except LockHeldError:
            if stopping():
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


def own_writes_only(
    pending: PendingEvents,
    settled: tuple[Target, ...] | None,
    settings: Settings,
    caches: Caches,
) -> bool:
    """Whether the events due are only the last pass's own writes: every one in a target
    directory, on a file that is still what that pass left there (or on no managed file). Then
    no pass runs. Anything else, a file changed since, an event elsewhere, events that may have
    been lost, or a last pass that did not leave every target as desired (`settled` None), runs
    one. Takes the events due either way."""
    if settled is None:
        return False
    if not pending.take():
        return False  # an event elsewhere: the pass that runs now covers every event
    touched = pending.take_touched()
    if touched is None:
        pending.blind()
        return False
    if targets_as_left(settings, settled, touched, caches.targets):
        log.info("events.own_writes", paths=len(touched), pass_needed=False)
        return True
    pending.touch(touched)  # the pass looks at them again
    return False
