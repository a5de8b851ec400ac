"""How a pass ended: one outcome type for the pass, the daemon, the command line and metrics."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """A pass's outcome. A str: records, JSON and metric labels hold its value unchanged."""

    CONVERGED = "converged"
    """Changes were applied, the hooks ran and verification passed."""
    NO_CHANGE = "no-change"
    """The targets already matched the desired state."""
    REJECTED = "rejected"
    """The desired state is invalid; nothing was touched."""
    FAILED = "failed"
    """Applying, a hook or verification failed; the previous generation was put back."""
    SUSPENDED = "suspended"
    """Changes are pending, but reconciling is suspended."""
    DEFERRED = "deferred"
    """The desired state was being swapped as it was read; it is read again shortly."""

    @property
    def ok(self) -> bool:
        """The targets match the desired state that was read."""
        return self in OK_OUTCOMES


OK_OUTCOMES = frozenset({Outcome.CONVERGED, Outcome.NO_CHANGE})
"""The outcomes that leave the targets as a verified pass left them (or made them)."""
