"""The operator's view of a plan: its text lines and the `plan --json` document.

The text scrubs every value it shows; the document is scrubbed by whoever serialises it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.support.redact import scrub_line

if TYPE_CHECKING:
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
    lines = [f"revision {scrub_line(current.revision)}: {len(current.changes)} change(s)"]
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
