"""What the reconciler remembers between passes in var_dir: last applied, status, suspension."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.core.outcome import OK_OUTCOMES, Outcome
from reconciler.core.timefmt import now_rfc3339
from reconciler.support import fsio

LAST_APPLIED = "last-applied.json"
STATUS = "status.json"
SUSPENDED = "suspended.json"
RECENT_PASSES = 20


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = fsio.read_bytes(path)
    except OSError:
        return None
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _store(path: Path, value: dict[str, Any]) -> None:
    # No indent: with one, json falls back to its pure-Python encoder, and last-applied.json holds
    # a digest per target (thousands) and is rewritten by every pass that changes one. Sorted keys
    # keep the bytes stable between passes; `jq . FILE` shows it indented. The indented files of
    # earlier versions still load: json reads both.
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    fsio.ensure_private_dir(path.parent, configured=True)  # var_dir: configured, may be a link
    fsio.replace_file(path, encoded, 0o600)


@dataclass(frozen=True, slots=True)
class LastApplied:
    """The targets as the last successful pass left them: what drift is measured against."""

    revision: str
    time: str
    targets: dict[str, str | None]


def load_last_applied(var_dir: Path) -> LastApplied | None:
    raw = _load(var_dir / LAST_APPLIED)
    if raw is None:
        return None
    try:
        return LastApplied(str(raw["revision"]), str(raw["time"]), dict(raw["targets"]))
    except (KeyError, TypeError, ValueError):
        return None


def store_last_applied(var_dir: Path, revision: str, targets: dict[str, str | None]) -> None:
    _store(
        var_dir / LAST_APPLIED,
        {"revision": revision, "time": now_rfc3339(), "targets": targets},
    )


def load_status(var_dir: Path) -> dict[str, Any]:
    return _load(var_dir / STATUS) or {}


def record_attempt(
    var_dir: Path,
    *,
    revision: str,
    outcome: Outcome,
    reason: str | None = None,
    changes: int = 0,
    drift: int = 0,
) -> None:
    """Remember one pass's outcome for `reconciler status`."""
    status = load_status(var_dir)
    entry = {
        "revision": revision,
        "time": now_rfc3339(),
        "outcome": str(outcome),
        "reason": reason,
        "changes": changes,
        "drift": drift,
    }
    status["last_attempt"] = entry
    if outcome in OK_OUTCOMES:
        status["last_applied"] = {"revision": revision, "time": entry["time"]}
    recent = [entry, *status.get("recent", [])][:RECENT_PASSES]
    status["recent"] = recent
    _store(var_dir / STATUS, status)


def load_suspension(var_dir: Path) -> dict[str, Any] | None:
    return _load(var_dir / SUSPENDED)


def suspend(var_dir: Path, reason: str | None) -> None:
    _store(var_dir / SUSPENDED, {"since": now_rfc3339(), "reason": reason})


def resume(var_dir: Path) -> bool:
    """Lift a suspension; False when there was none."""
    path = var_dir / SUSPENDED
    if not path.exists():
        return False
    fsio.remove_file(path)
    return True
