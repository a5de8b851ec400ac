"""The audit log: the record and its hash chain (`record`), the writer that appends and
fsyncs each record before its step is reported done (`writer`), the log's files (rotation, a torn
last line), verification of what remains, and its head: published off the box after the records
that moved it (`publish`), and checked against what witnesses kept (`witness`).
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.audit.files import audit_files
    from reconciler.audit.publish import HeadPublisher
    from reconciler.audit.record import (
        EVENTS,
        REQUIRED_FIELDS,
        ZERO_HASH,
        Event,
        JsonValue,
        Record,
        parse_ts,
    )
    from reconciler.audit.verifier import verify
    from reconciler.audit.witness import (
        Head,
        WitnessReport,
        check_witnessed,
        read_head,
        read_witnessed,
    )
    from reconciler.audit.writer import AuditLog

__all__ = [
    "audit_files",
    "AuditLog",
    "check_witnessed",
    "Event",
    "EVENTS",
    "Head",
    "HeadPublisher",
    "JsonValue",
    "parse_ts",
    "read_head",
    "read_witnessed",
    "Record",
    "REQUIRED_FIELDS",
    "verify",
    "WitnessReport",
    "ZERO_HASH",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "AuditLog": "writer",
        "Event": "record",
        "EVENTS": "record",
        "JsonValue": "record",
        "Record": "record",
        "REQUIRED_FIELDS": "record",
        "ZERO_HASH": "record",
        "parse_ts": "record",
        "verify": "verifier",
        "audit_files": "files",
        "HeadPublisher": "publish",
        "Head": "witness",
        "WitnessReport": "witness",
        "check_witnessed": "witness",
        "read_head": "witness",
        "read_witnessed": "witness",
    },
)
