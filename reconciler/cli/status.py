"""`reconciler status`: what was applied, what is pending, what expires (from var_dir and ROOT)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.config import Settings
from reconciler.core.layout import RootLayout
from reconciler.core.timefmt import rfc3339
from reconciler.core.wording import counted
from reconciler.errors import ReconcilerError
from reconciler.txn import Transaction, records


def _expiry(path: Path, now: datetime) -> dict[str, Any] | None:
    from reconciler.truststore import certificates_in

    certs = certificates_in(path)
    if not certs:
        return None
    soonest = min(certs, key=lambda c: c.not_valid_after_utc)
    not_after = soonest.not_valid_after_utc
    return {
        "path": str(path),
        "subject": soonest.subject.rfc4514_string(),
        "not_after": rfc3339(not_after),
        "days_left": round((not_after - now).total_seconds() / 86400, 1),
    }


def _ready(saved: dict[str, Any]) -> dict[str, Any]:
    """What /readyz answers, decided from the same record (a daemon's view, without asking it)."""
    from reconciler.daemon import from_status

    decided = from_status(saved)
    return {"ready": decided.ready, "reason": decided.reason}


def collect_status(settings: Settings) -> dict[str, Any]:
    """Everything `status --json` prints. Reads, never writes."""
    from reconciler.reconcile import make_plan

    now = datetime.now(UTC)
    saved = records.load_status(settings.var_dir)
    status: dict[str, Any] = {
        "state_dir": str(settings.state_dir),
        "root": str(settings.root),
        "last_applied": saved.get("last_applied"),
        "last_attempt": saved.get("last_attempt"),
        "recent": saved.get("recent", [])[:10],
        "suspended": records.load_suspension(settings.var_dir),
        "ready": _ready(saved),
    }
    try:
        interrupted = Transaction.load(settings.var_dir, root=settings.root)
        status["interrupted_pass"] = (
            {"revision": interrupted.journal.revision, "phase": interrupted.stopped_at()}
            if interrupted
            else None
        )
    except ReconcilerError as exc:
        status["interrupted_pass"] = {"error": str(exc)}
    planned = make_plan(settings, now)
    if planned.blocked is not None:
        status["desired"] = {
            "valid": True,
            "revision": planned.revision,
            "blocked": planned.blocked,
        }
        status["pending"] = None
    elif planned.plan is None:
        status["desired"] = {
            "valid": False,
            "revision": planned.revision,
            "errors": [str(f) for f in planned.evaluation.errors],
        }
        status["pending"] = None
    else:
        changes = planned.plan.changes
        status["desired"] = {
            "valid": True,
            "revision": planned.revision,
            "warnings": [str(f) for f in planned.evaluation.warnings],
        }
        status["pending"] = {
            "changes": len(changes),
            "drift": [
                {"path": c.path, "kind": c.kind, "action": c.action}
                for c in changes
                if c.cause == "drift"
            ],
            "directories": [str(d) for d in planned.dir_modes],
        }
    # Read from ROOT/data only when it is the reconciler's directory, not a link out of ROOT.
    blocked = planned.blocked is not None
    status["identity"] = None if blocked else _expiry(RootLayout(settings.root).cert, now)
    from reconciler.truststore import managed_files

    trust = []
    for path in managed_files(settings.trust_path, settings.trust_prefix).values():
        found = _expiry(path, now)
        if found is not None:
            trust.append(found)
    status["trust"] = trust
    status["check"] = check(status)
    return status


#: `status`'s exit codes, for a monitoring check: the worst condition found wins.
EXIT_CONVERGED = 0
EXIT_PENDING = 2
EXIT_REJECTED = 3
EXIT_FAILED = 4
EXIT_NOT_SERVING = 5


def check(status: dict[str, Any]) -> dict[str, Any]:
    """The one verdict a monitoring check needs, worst first: not serving a verified
    configuration, the last pass failed (rolled back), the desired state rejected, changes or
    drift pending; else serving and converged. `exit_code` is what `status` exits with."""
    attempt = status["last_attempt"] or {}
    outcome = attempt.get("outcome")
    pending = status["pending"]
    interrupted = status["interrupted_pass"]
    blocked = status["desired"].get("blocked")
    directories = pending["directories"] if pending else []
    if not status["ready"]["ready"]:
        code, state, summary = EXIT_NOT_SERVING, "not-serving", status["ready"]["reason"]
    elif blocked:
        # A link where one of the reconciler's directories belongs: every pass fails on it.
        code, state, summary = EXIT_FAILED, "failed", f"a pass cannot run: {blocked}"
    elif outcome == "failed" or (interrupted and "error" in interrupted):
        reason = attempt.get("reason") if outcome == "failed" else interrupted["error"]
        code, state, summary = EXIT_FAILED, "failed", f"the last pass failed: {reason}"
    elif not status["desired"]["valid"] or outcome == "rejected":
        errors = status["desired"].get("errors") or [attempt.get("reason")]
        code, state, summary = EXIT_REJECTED, "rejected", f"desired state rejected: {errors[0]}"
    elif (
        (pending and pending["changes"])
        or directories
        or interrupted
        or outcome in ("suspended", "deferred")
    ):
        changes = pending["changes"] if pending else 0
        drift = len(pending["drift"]) if pending else 0
        summary = f"{counted(changes, 'change')} pending, {drift} from drift"
        if directories:
            summary += f"; {counted(len(directories), 'directory mode')} to set back"
        if status["suspended"]:
            summary += " (suspended)"
        if interrupted:
            summary += "; an interrupted pass awaits recovery"
        code, state = EXIT_PENDING, "pending"
    else:
        code, state = EXIT_CONVERGED, "converged"
        summary = f"serving revision {attempt.get('revision')}; the targets match it"
        if status["suspended"]:
            summary += " (suspended)"
    return {"exit_code": code, "state": state, "summary": summary}


def format_status(status: dict[str, Any]) -> str:
    def when(entry: dict[str, Any] | None) -> str:
        if not entry:
            return "never"
        text = f"{entry['revision']} at {entry['time']}"
        if entry.get("outcome"):
            text += f": {entry['outcome']}"
        if entry.get("reason"):
            text += f" ({entry['reason']})"
        return text

    lines = [
        f"desired state   {status['state_dir']}",
        f"root            {status['root']}",
        f"last applied    {when(status['last_applied'])}",
        f"last attempt    {when(status['last_attempt'])}",
    ]
    verdict = status["check"]
    lines.append(f"check           {verdict['state']}: {verdict['summary']}")
    ready = status["ready"]
    lines.append(f"ready           {'yes' if ready['ready'] else 'NO'}: {ready['reason']}")
    if status["suspended"]:
        reason = status["suspended"].get("reason") or "no reason given"
        lines.append(f"SUSPENDED       since {status['suspended']['since']}: {reason}")
    if status["interrupted_pass"] and "error" in status["interrupted_pass"]:
        lines.append(f"JOURNAL         {status['interrupted_pass']['error']}")
    elif status["interrupted_pass"]:
        lines.append(
            f"interrupted     {status['interrupted_pass']} (resolved at the next apply/run)"
        )
    desired = status["desired"]
    if not desired["valid"]:
        lines.append(f"desired state   INVALID: {desired['errors'][0]}")
    if desired.get("blocked"):
        lines.append(f"BLOCKED         {desired['blocked']}")
    pending = status["pending"]
    if pending is not None:
        drift = pending["drift"]
        changes = counted(pending["changes"], "change")
        lines.append(f"pending         {changes}, {len(drift)} from drift")
        lines += [f"  drift         {d['action']} {d['path']}" for d in drift]
        lines += [f"  directory     {d}" for d in pending.get("directories", [])]
    identity = status["identity"]
    if identity:
        lines.append(
            f"identity        {identity['subject']}, expires {identity['not_after']} "
            f"({identity['days_left']} days)"
        )
    else:
        lines.append("identity        none installed")
    if status["trust"]:
        soonest = min(status["trust"], key=lambda t: t["days_left"])
        lines.append(
            f"trust           {counted(len(status['trust']), 'entry')}; soonest expiry "
            f"{soonest['not_after']} ({soonest['days_left']} days, {soonest['subject']})"
        )
    if status["recent"]:
        lines.append("recent passes")
        for entry in status["recent"]:
            reason = entry.get("reason") or ""
            line = f"  {entry['time']}  {entry['outcome']:<10} {entry['revision'][:20]}  {reason}"
            lines.append(line.rstrip())
    return "\n".join(lines)
