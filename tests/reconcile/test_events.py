"""Audit events: one type per event, records as docs/audit.md lists them, both sinks fed alike."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from reconciler.audit.record import EVENTS
from reconciler.audit.verifier import verify
from reconciler.audit.writer import AuditLog
from reconciler.core.desired import CertInfo
from reconciler.core.secret import SecretBytes
from reconciler.reconcile.events import (
    EVENT_TYPES,
    AuditEvent,
    ChangeApplied,
    Notice,
    PassFailed,
    PassStarted,
    Recorder,
)
from reconciler.support import devpki
from reconciler.support.logging import get_logger

REV = "0123456789abcdef0123456789abcdef01234567"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "audit.md"
if not DOCS.is_file():
    DOCS = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _documented_fields() -> dict[str, set[str]]:
    """docs/audit.md's events table: event -> the field names in its last column."""
    table: dict[str, set[str]] = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[a-z.]+`", cells[0]):
            names = re.sub(r"\([^)]*\)", "", cells[2])  # values in parentheses are not fields
            table[cells[0].strip("`")] = set(re.findall(r"`([a-z_0-9]+)`", names))
    return table


def _sample(kind: type[AuditEvent]) -> AuditEvent:
    """An instance of `kind` with every field filled (a certificate where one may be)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        if f.name == "certificate":
            values[f.name] = _cert()
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = None
    return kind(**values)


def _cert() -> CertInfo:
    moment = datetime(2027, 2, 25, tzinfo=UTC)
    return CertInfo("CN=gw", "CN=ca", "01", moment, moment, "ab" * 32, False, False)


def test_every_audit_event_has_a_type_and_every_type_an_audit_event() -> None:
    assert {kind.name for kind in EVENT_TYPES} == set(EVENTS)


def test_each_event_records_the_fields_the_audit_docs_list() -> None:
    documented = _documented_fields()
    assert set(documented) == set(EVENTS)
    for kind in EVENT_TYPES:
        fields = set(_sample(kind).fields())
        if kind.name == "warning":
            assert "reason" in fields  # "reason and details"
            continue
        shown = documented[kind.name] or documented.get("change.applied", set())
        assert fields == shown, kind.__name__


def test_recorder_writes_the_audit_record_before_the_log_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    seen: list[tuple[str, int]] = []

    def audit_lines_at_log_time(
        logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        seen.append((event_dict["event"], len(path.read_bytes().splitlines())))
        return event_dict

    structlog.configure(processors=[audit_lines_at_log_time, structlog.testing.LogCapture()])
    with AuditLog(path) as audit:
        recorder = Recorder(audit, get_logger("reconciler.pass"))
        recorder.record(PassStarted(revision=REV, kinds=("identity",), changes=1))
        recorder.record(PassFailed(revision=REV, reason="hook reload exited 1"))
    assert seen == [("pass.started", 1), ("pass.failed", 2)]


def test_recorder_feeds_both_sinks_the_same_values(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    change = ChangeApplied(
        revision=REV,
        kind="identity",
        path="/gw/data/cert.pem",
        action="update",
        before_sha256="a" * 64,
        after_sha256="b" * 64,
        certificate=_cert(),
    )
    with capture_logs() as logs, AuditLog(path) as audit:
        recorder = Recorder(audit)
        record = recorder.record(change)
        recorder.record(PassFailed(revision=REV, reason="verification failed"))
    assert record is not None
    on_disk = [json.loads(line) for line in path.read_text().splitlines()]
    assert on_disk[0] == record
    assert logs[0] == {
        "event": "change.applied",
        "log_level": "info",
        "logger": "reconciler.audit",
        "revision": REV,
        "seq": 1,
        "kind": "identity",
        "path": "/gw/data/cert.pem",
        "action": "update",
        "before_sha256": "a" * 64,
        "after_sha256": "b" * 64,
        "subject": "CN=gw",
        "issuer": "CN=ca",
        "serial": "01",
        "not_after": "2027-02-25T00:00:00Z",
        "sha256_fingerprint": "ab" * 32,
    }
    assert logs[1]["log_level"] == "warning"
    assert logs[1]["seq"] == 2


def test_recorder_redacts_key_material_in_both_logs(tmp_path: Path) -> None:
    key_pem = devpki.issue(devpki.make_ca(), "gw.example.com").key_pem
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    details = {"key": SecretBytes(key_pem), "text": key_pem.decode().lower()}
    with capture_logs() as logs:
        Recorder(audit).record(Notice(revision=REV, reason="odd", details=details))
    audit.close()
    assert logs[0]["key"] == "[private key redacted]"
    assert logs[0]["text"].strip() == "[private key redacted]"
    body = key_pem.decode().splitlines()[1]
    assert body.lower() not in path.read_text()
    assert verify([path]).ok


def test_recorder_without_an_audit_log_only_logs() -> None:
    with capture_logs() as logs:
        assert Recorder(None).record(Notice(revision=None, reason="plan only")) is None
    assert logs == [
        {
            "event": "warning",
            "log_level": "warning",
            "logger": "reconciler.audit",
            "revision": None,
            "reason": "plan only",
        }
    ]


def test_a_record_is_scrubbed_once_and_what_the_reconciler_made_is_not_searched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit record and log line share the record's scrubbed values: a certificate's subject is
    searched for secrets once, the path, digests and fingerprint the reconciler made never."""
    import io

    from reconciler.support import redact
    from reconciler.support.logging import configure_logging

    configure_logging("json", io.StringIO())
    searched: list[str] = []
    real = redact._scrub

    def counting(text: str) -> str:
        searched.append(text)
        return real(text)

    monkeypatch.setattr(redact, "_scrub", counting)
    now = datetime.now(UTC)
    cert = CertInfo("CN=Partner CA,O=Example", "CN=Root", "0a1b", now, now, "cd" * 32, True, False)
    path = "/usr/local/share/ca-certificates/reconciler-partner.crt"
    event = ChangeApplied(
        revision=REV, kind="trust", action="create", path=path,
        before_sha256=None, after_sha256="ef" * 32, certificate=cert,
    )  # fmt: skip
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        Recorder(audit).record(event)
    assert searched.count("CN=Partner CA,O=Example") == 1
    assert not {path, "ef" * 32, "cd" * 32, REV} & set(searched)
