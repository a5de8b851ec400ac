"""The operator's view of a plan: its text lines and the `plan --json` document.

The text scrubs every value it shows; the document is scrubbed by whoever serialises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reconciler.core.wording import counted
from reconciler.support.redact import scrub_line

if TYPE_CHECKING:
    from reconciler.core.plan import Change
    from reconciler.reconcile import Planned


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "(absent)"


def plan_to_json(planned: Planned) -> dict[str, Any]:
    """The `plan --json` document (certificate times RFC 3339 UTC with a `Z`)."""
    assert planned.plan is not None
    return {
        "revision": planned.plan.revision,
        "changes": [
            {
                "kind": c.kind,
                "path": c.path,
                "action": c.action,
                "cause": c.cause,
                "before_sha256": c.before_sha256,
                "after_sha256": c.after_sha256,
                "mode": f"{c.mode:04o}" if c.mode is not None else None,
                "certificates": [i.fields() for i in c.certs],
            }
            for c in planned.plan.changes
        ],
        "directories": [
            {"path": d.path, "mode": f"{d.mode:04o}", "wanted": f"{d.wanted:04o}"}
            for d in planned.dir_modes
        ],
        "warnings": [str(w) for w in planned.evaluation.warnings],
    }


def plan_summary_json(planned: Planned) -> dict[str, Any]:
    """`plan --json --summary`: the counts by kind and action instead of every change."""
    assert planned.plan is not None
    changes = planned.plan.changes
    return {
        "revision": planned.plan.revision,
        "changes": len(changes),
        "drift": sum(1 for c in changes if c.cause == "drift"),
        "summary": tally(changes),
        "warnings": [str(w) for w in planned.evaluation.warnings],
    }


def format_plan_summary(planned: Planned) -> str:
    """`plan --summary`: one line per kind instead of one per change."""
    assert planned.plan is not None
    changes = planned.plan.changes
    if not changes:
        return format_plan(planned)
    head = f"revision {planned.plan.revision}: {counted(len(changes), 'change')}"
    return "\n".join([head, *format_tally(tally(changes))])


def format_plan(planned: Planned) -> str:
    """`plan`'s text: one line per change, and the leaf certificate's subject and expiry."""
    assert planned.plan is not None
    current = planned.plan
    modes = [f"  {'directory':<12} {'mode':<6} {scrub_line(d)}" for d in planned.dir_modes]
    if current.empty:
        revision = scrub_line(current.revision)
        if modes:
            return "\n".join([f"revision {revision}: no target changes", *modes])
        return f"revision {revision}: no changes; the targets match the desired state"
    lines = [f"revision {scrub_line(current.revision)}: {counted(len(current.changes), 'change')}"]
    paths = [scrub_line(c.path) for c in current.changes]
    width = max(len(path) for path in paths)
    for c, path in zip(current.changes, paths, strict=True):
        cause = "  (drift: changed by someone else)" if c.cause == "drift" else ""
        lines.append(
            f"  {c.kind:<12} {c.action:<6} {path:<{width}}  "
            f"{_short(c.before_sha256)} -> {_short(c.after_sha256)}{cause}"
        )
        if c.certs:
            leaf = c.certs[0]
            more = f" (+{len(c.certs) - 1} more)" if len(c.certs) > 1 else ""
            expires = f"{leaf.not_after:%Y-%m-%d}"
            subject = scrub_line(leaf.subject)
            lines.append(f"  {'':<12} {'':<6} subject {subject}, expires {expires}{more}")
    return "\n".join(lines + modes)


def tally(changes: Sequence[Change]) -> dict[str, dict[str, int]]:
    """Changes counted by kind (in the kinds' order), then by action; drift counted apart."""
    from reconciler.core.desired import KINDS

    counts: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        mine = [c for c in changes if c.kind == kind]
        if not mine:
            continue
        by_action: dict[str, int] = {}
        for action in ("create", "update", "delete"):
            number = sum(1 for c in mine if c.action == action)
            if number:
                by_action[action] = number
        drift = sum(1 for c in mine if c.cause == "drift")
        if drift:
            by_action["drift"] = drift
        counts[kind] = by_action
    return counts


def format_tally(counts: dict[str, dict[str, int]], indent: str = "  ") -> list[str]:
    """One line per kind, the first count right-aligned: `trust         3,000 create, 2 delete`,
    and how many of them undo someone else's edit: `(1 drift)`."""
    if not counts:
        return []
    width = max(len(f"{n:,}") for by_action in counts.values() for n in by_action.values())
    lines = []
    for kind, by_action in counts.items():
        actions = [(action, n) for action, n in by_action.items() if action != "drift"]
        parts = [f"{n:,} {action}" for action, n in actions]
        if parts:
            parts[0] = parts[0].rjust(width + 1 + len(actions[0][0]))
        drift = by_action.get("drift")
        suffix = f" ({drift:,} drift)" if drift else ""
        lines.append(f"{indent}{kind:<13}{', '.join(parts)}{suffix}")
    return lines
