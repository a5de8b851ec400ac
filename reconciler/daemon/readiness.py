"""Readiness: whether a verified configuration is in place, as /readyz and `status` report it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.core.outcome import OK_OUTCOMES, Outcome

__all__ = ["Readiness", "decide", "NOT_YET", "applied_revision", "from_status"]


@dataclass(frozen=True, slots=True)
class Readiness:
    """Ready or not, and one line saying why (the /readyz body)."""

    ready: bool
    reason: str


NOT_YET = Readiness(False, "no pass has finished yet")


def decide(
    outcome: str | None,
    revision: str | None,
    reason: str | None,
    last_applied: str | None,
) -> Readiness:
    """Ready while a verified configuration is in place.

    `outcome`, `revision` and `reason` describe the last pass that finished (None: none has);
    `last_applied` is the revision the last verified pass left in place (None: never one).

    A rejected desired state changes nothing, a failed pass rolls back to the previous
    generation, and a suspension applies nothing: after any of them the last verified
    configuration still serves, so a sidecar stays ready and its pod stays in its Service. They
    show in the metrics and `status` instead, which is what alerting watches. Only while no
    verified configuration has ever been put in place (a first desired state that is rejected or
    fails) is the answer "not ready".
    """
    if outcome is None or revision is None:
        return NOT_YET
    if outcome in OK_OUTCOMES:
        return Readiness(True, f"{outcome} at revision {revision}")
    last = f"last pass {outcome} at revision {revision}"
    if reason and outcome != Outcome.SUSPENDED:
        last += f": {reason if len(reason) <= 300 else reason[:297] + '...'}"
    if last_applied is None:
        return Readiness(False, f"no verified configuration in place yet; {last}")
    return Readiness(True, f"serving revision {last_applied}; {last}")


def applied_revision(saved: dict[str, Any]) -> str | None:
    """The revision the last verified pass left in place, from var_dir's status record."""
    applied = saved.get("last_applied")
    if isinstance(applied, dict) and isinstance(applied.get("revision"), str):
        return str(applied["revision"])
    return None


def from_status(saved: dict[str, Any]) -> Readiness:
    """The same decision from var_dir's status record, for `reconciler status`."""
    attempt = saved.get("last_attempt")
    if not isinstance(attempt, dict):
        return NOT_YET
    return decide(
        attempt.get("outcome"), attempt.get("revision"), attempt.get("reason"),
        applied_revision(saved),
    )  # fmt: skip
