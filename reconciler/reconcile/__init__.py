"""One pass as a call: `reconcile(settings, memory, hints, tools) -> (PassResult, PassMemory)`.
It recovers an interrupted pass, plans (reads, evaluates, renders and compares with the targets),
applies (stage, swap, trust refresh, hooks, verification; commit or roll back) and records every
step as an audit event (`events`). It keeps no state between calls and returns what happened;
when to run again is the caller's decision.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.reconcile.events import Notice, Recorder
    from reconciler.reconcile.planning import Planned, make_plan, targets_as_left
    from reconciler.reconcile.runner import (
        Caches,
        Hints,
        PassMemory,
        PassResult,
        Tools,
        reconcile,
        settle_trust_links,
    )

__all__ = [
    "Caches",
    "Hints",
    "make_plan",
    "Notice",
    "PassMemory",
    "PassResult",
    "Planned",
    "reconcile",
    "Recorder",
    "settle_trust_links",
    "targets_as_left",
    "Tools",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "reconcile": "runner",
        "Caches": "runner",
        "PassResult": "runner",
        "PassMemory": "runner",
        "Hints": "runner",
        "Tools": "runner",
        "settle_trust_links": "runner",
        "make_plan": "planning",
        "Planned": "planning",
        "targets_as_left": "planning",
        "Recorder": "events",
        "Notice": "events",
    },
)
