"""When the daemon runs the next pass: the debounce window, the failure backoff, `next_action`.

Pure: times are plain floats (monotonic seconds) passed in by the caller, so the daemon's timing
rules are tested without clocks, threads or watchers. The daemon (`reconciler.daemon.loop`) asks
`next_action` what to do, does it, and otherwise sleeps until the deadline it names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

#: A failed desired state is retried after 30 s, doubling up to the resync interval.
FIRST_RETRY_S = 30.0


def retry_delay(failures: int, cap_s: float, first_s: float = FIRST_RETRY_S) -> float:
    """Seconds to wait after the `failures`-th consecutive failure of one revision (1-based)."""
    if failures < 1:
        return 0.0
    # 2**n grows past any cap quickly; stop doubling once past it so huge counts cannot overflow.
    delay = first_s
    for _ in range(failures - 1):
        if delay >= cap_s:
            break
        delay *= 2
    return min(delay, cap_s)


@dataclass(frozen=True, slots=True)
class Backoff:
    """The failing revision, how often it failed in a row, and when it may be tried again."""

    revision: str | None = None
    failures: int = 0
    retry_at: float | None = None

    @property
    def active(self) -> bool:
        return self.retry_at is not None

    def after_pass(self, outcome: str, revision: str | None, now: float, cap_s: float) -> Backoff:
        """The schedule after a pass: failures of one revision back off; anything else clears."""
        if outcome != "failed":
            return Backoff()
        failures = self.failures + 1 if revision == self.revision else 1
        return Backoff(revision, failures, now + retry_delay(failures, cap_s))

    def holds(self, revision: str | None, now: float) -> bool:
        """Whether a pass for `revision` must wait: the same failing revision before its retry.

        A different revision (a new push) is never held back by an older one's failures.
        """
        if self.retry_at is None or now >= self.retry_at:
            return False
        return revision == self.revision


def state_key(revision: str, content_digest: str) -> str:
    """What backoff compares: the revision, and what was read (a git commit does not change
    when a key in key_dirs does, yet that is a new desired state, tried at once)."""
    return f"{revision}+{content_digest}" if content_digest else revision


@dataclass(frozen=True, slots=True)
class Debounce:
    """Events since the last pass: a pass is due after `quiet_s` of quiet, at most `max_wait_s`
    after the first event, or at once after an atomic swap."""

    quiet_s: float
    max_wait_s: float
    first_at: float | None = None
    last_at: float | None = None
    urgent: bool = False

    @property
    def pending(self) -> bool:
        return self.first_at is not None

    def note(self, now: float, *, urgent: bool = False) -> Debounce:
        """One more event; `urgent` (a link swap) makes the pass due now."""
        first = self.first_at if self.first_at is not None else now
        return replace(self, first_at=first, last_at=now, urgent=self.urgent or urgent)

    def due_at(self) -> float | None:
        """When the pass should start, or None without events."""
        if self.first_at is None or self.last_at is None:
            return None
        if self.urgent:
            return self.first_at
        return min(self.last_at + self.quiet_s, self.first_at + self.max_wait_s)

    def cleared(self) -> Debounce:
        """The window after a pass started: events from now on start a new one."""
        return Debounce(self.quiet_s, self.max_wait_s)


def next_deadline(*deadlines: float | None) -> float | None:
    """The earliest of the given deadlines, ignoring None."""
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None


Trigger = Literal["start", "reload", "retry", "resync", "event"]
"""Why a pass runs. Every trigger but "event" looks at every target."""


@dataclass(frozen=True, slots=True)
class Action:
    """What the daemon does next.

    * "pass": run a pass now, for `trigger`.
    * "check": events are due while a failing state backs off: run a pass only if the desired
      state is no longer the failing one (`Backoff.holds`); the caller reads it to know.
    * "wait": sleep `wait_s` seconds (None: until an event) or until woken, then ask again.
    """

    kind: Literal["pass", "check", "wait"]
    trigger: Trigger | None = None
    wait_s: float | None = None


def next_action(
    now: float,
    *,
    event_due: float | None,
    backoff: Backoff,
    resync_at: float,
    forced: Trigger | None = None,
) -> Action:
    """The next step of the loop: a forced pass (start, reload) first, then a due retry or
    resync, then due events; else wait for the earliest of them.

    While backing off, the retry replaces the resync: the failing state is tried again at its
    retry time, and a resync in between would only fail it again sooner.
    """
    if forced is not None:
        return Action("pass", forced)
    timed = backoff.retry_at if backoff.active else resync_at
    if timed is not None and timed <= now:
        return Action("pass", "retry" if backoff.active else "resync")
    if event_due is not None and event_due <= now:
        return Action("check" if backoff.active else "pass", "event")
    deadline = next_deadline(timed, event_due)
    return Action("wait", wait_s=None if deadline is None else max(0.0, deadline - now))
