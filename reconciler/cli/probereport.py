"""What `reconciler probe` prints: per-profile verdicts, the exit code, a table and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from reconciler.core.timefmt import rfc3339
from reconciler.probe import ProbeResult
from reconciler.support.redact import scrub_line

__all__ = ["ProfileVerdict", "exit_code", "format_results", "profile_verdicts", "results_to_json"]

ProfileVerdict = Literal["ok", "degraded", "failed", "skipped"]


def profile_verdicts(results: Sequence[ProbeResult]) -> dict[str, ProfileVerdict]:
    """Per profile: "ok" (every TLS server passed), "degraded" (some passed, some failed: in
    failover mode a failing preferred server is not fine because a later one answers),
    "failed" (none passed) or "skipped" (no TLS server)."""
    by_name: dict[str, list[ProbeResult]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result)
    verdicts: dict[str, ProfileVerdict] = {}
    for name, mine in by_name.items():
        probed = [r for r in mine if r.status != "skipped"]
        failed = sum(r.failed for r in probed)
        if not probed:
            verdicts[name] = "skipped"
        elif not failed:
            verdicts[name] = "ok"
        else:
            verdicts[name] = "failed" if failed == len(probed) else "degraded"
    return verdicts


def exit_code(results: Sequence[ProbeResult]) -> int:
    """0 when every server of every TLS profile is trusted (a starttls-optional downgrade only
    warns), else 1: a degraded profile fails the probe too."""
    return 1 if any(result.failed for result in results) else 0


def results_to_json(results: Sequence[ProbeResult]) -> list[dict[str, object]]:
    """Machine output of `reconciler probe --json`: one object per server."""
    verdicts = profile_verdicts(results)
    return [
        {
            "name": r.name,
            "server": r.server,
            "servers": r.servers,
            "mode": r.mode,
            "profile_status": verdicts[r.name],
            "target": r.target,
            "scheme": r.scheme,
            "tls": r.tls,
            "status": r.status,
            "ok": not r.failed,
            "detail": r.detail,
            "leaf_subject": r.leaf_subject,
            "leaf_not_after": _rfc3339_or_none(r.leaf_not_after),
            "duration_ms": r.duration_ms,
            "downgrade_warning": r.downgrade_warning,
        }
        for r in results
    ]


def format_results(results: Sequence[ProbeResult]) -> str:
    """Human output of `reconciler probe`: one aligned row per server, then the profiles that are
    not fine, warnings, a summary. Every cell goes through the output boundary: a server's
    certificate subject and what it said come from outside."""
    header = ("PROFILE", "SERVER", "TARGET", "TLS", "STATUS", "LEAF", "NOT AFTER", "DETAIL")
    rows = [header] + [
        tuple(
            scrub_line(cell)
            for cell in (
                r.name,
                f"{r.server + 1}/{r.servers}",
                r.target,
                r.tls,
                r.status if not r.failed else f"{r.status} !",
                r.leaf_subject or "-",
                _rfc3339_or_none(r.leaf_not_after) or "-",
                r.detail,
            )
        )
        for r in results
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ]
    verdicts = profile_verdicts(results)
    for name, verdict in verdicts.items():
        if verdict in ("degraded", "failed"):
            lines.append(scrub_line(f"{verdict}: {name}: {_verdict_detail(name, results)}"))
    lines += [
        scrub_line(f"warning: {r.name}: {r.downgrade_warning}")
        for r in results
        if r.downgrade_warning
    ]
    counts = {
        "trusted": sum(r.status == "trusted" for r in results),
        "failed": sum(r.failed for r in results),
        "skipped (no TLS)": sum(r.status == "skipped" for r in results),
    }
    degraded = sum(v == "degraded" for v in verdicts.values())
    if degraded:
        counts["degraded profile(s)"] = degraded
    lines.append(", ".join(f"{count} {label}" for label, count in counts.items()))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _verdict_detail(name: str, results: Sequence[ProbeResult]) -> str:
    mine = [r for r in results if r.name == name and r.status != "skipped"]
    parts = []
    for r in mine:
        preferred = r.server == 0 and r.mode == "failover" and r.servers > 1
        role = "preferred server" if preferred else "server"
        parts.append(f"{role} {r.server + 1} ({r.target}) {'failed' if r.failed else 'passed'}")
    if not mine:
        return ""
    # The mode says how the servers are used: a one-server profile has none to speak of.
    mode = f" ({mine[0].mode})" if mine[0].servers > 1 else ""
    return "; ".join(parts) + mode


def _rfc3339_or_none(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment else None
