"""What `apply` shows: its result as one JSON object (`--json`), the exit status that says
"changed" (`--detailed-exitcode`), and the summary by kind a person reads on a terminal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.cli.planview import format_tally, tally
from reconciler.core.outcome import Outcome

if TYPE_CHECKING:
    from reconciler.reconcile import PassResult

__all__ = ["EXIT_CHANGED", "changed", "detailed_exit_code", "format_by_kind", "result_to_json"]

#: `apply --detailed-exitcode`: the pass applied changes (hooks ran, verification passed).
EXIT_CHANGED = 2


def changed(result: PassResult) -> bool:
    """Whether the pass changed a target and kept the change (a rolled-back pass did not)."""
    return result.outcome is Outcome.CONVERGED and result.plan is not None and not result.plan.empty


def detailed_exit_code(result: PassResult, code: int) -> int:
    """`code` (0 converged or nothing to do, 1 anything else), with 2 for a converged pass that
    changed something: the exit status an Ansible `changed_when` or a cron wrapper reads."""
    return EXIT_CHANGED if code == 0 and changed(result) else code


def result_to_json(result: PassResult) -> dict[str, Any]:
    """`apply --json`: the outcome, whether anything changed, every change, hook and finding."""
    from reconciler.support.redact import scrub

    changes = result.plan.changes if result.plan is not None else ()
    return {
        "outcome": str(result.outcome),
        "ok": result.ok,
        "changed": changed(result),
        "revision": result.revision,
        "reason": scrub(result.reason) if result.reason else None,
        "changes": [
            {
                "kind": c.kind,
                "path": c.path,
                "action": c.action,
                "cause": c.cause,
                "before_sha256": c.before_sha256,
                "after_sha256": c.after_sha256,
            }
            for c in changes
        ],
        "summary": tally(changes),
        "hooks": [
            {
                "hook": h.hook,
                "step": h.step,
                "phase": h.phase,
                "exit_code": h.exit_code,
                "duration_ms": h.duration_ms,
                "error": h.error,
            }
            for h in result.hooks
        ],
        "warnings": [scrub(str(f)) for f in result.findings if f.severity == "warning"],
        "errors": [scrub(str(f)) for f in result.findings if f.severity == "error"],
    }


def format_by_kind(result: PassResult) -> list[str]:
    """The changes of a pass counted by kind, for the summary on a terminal."""
    changes = result.plan.changes if result.plan is not None else ()
    return format_tally(tally(changes))
