"""What the reconciler remembers in var_dir: compact on disk, and files of older versions load."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.txn import records

TARGETS: dict[str, str | None] = {
    "/opt/gateway/data/cert.pem": "a" * 64,
    "/opt/gateway/data/key.pem": "b" * 64,
    "/opt/gateway/nginx/ssl.conf": None,
}


def test_last_applied_round_trips_as_one_sorted_line(tmp_path: Path) -> None:
    records.store_last_applied(tmp_path, "sha256:abc", TARGETS)
    loaded = records.load_last_applied(tmp_path)
    assert loaded is not None
    assert (loaded.revision, loaded.targets) == ("sha256:abc", TARGETS)
    text = (tmp_path / records.LAST_APPLIED).read_text()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert text.index('"revision"') < text.index('"targets"') < text.index('"time"')
    assert (tmp_path / records.LAST_APPLIED).stat().st_mode & 0o777 == 0o600


def test_indented_files_of_earlier_versions_still_load(tmp_path: Path) -> None:
    """A daemon upgraded in place reads what its predecessor wrote (json.dumps(indent=1))."""
    old = {"revision": "sha256:old", "time": "2026-11-27T10:00:00Z", "targets": TARGETS}
    (tmp_path / records.LAST_APPLIED).write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    status = {
        "last_attempt": {"revision": "sha256:old", "outcome": "converged"},
        "recent": [{"revision": "sha256:old", "outcome": "converged"}],
    }
    (tmp_path / records.STATUS).write_text(json.dumps(status, indent=1, sort_keys=True) + "\n")

    loaded = records.load_last_applied(tmp_path)
    assert loaded is not None
    assert (loaded.revision, loaded.time, loaded.targets) == (
        "sha256:old",
        "2026-11-27T10:00:00Z",
        TARGETS,
    )
    assert records.load_status(tmp_path) == status

    records.record_attempt(tmp_path, revision="sha256:new", outcome="no-change")
    recent = records.load_status(tmp_path)["recent"]
    assert [r["revision"] for r in recent] == ["sha256:new", "sha256:old"]


def test_unreadable_records_are_absent_not_fatal(tmp_path: Path) -> None:
    (tmp_path / records.LAST_APPLIED).write_text("{not json")
    (tmp_path / records.STATUS).write_text("[1, 2]")
    assert records.load_last_applied(tmp_path) is None
    assert records.load_status(tmp_path) == {}
