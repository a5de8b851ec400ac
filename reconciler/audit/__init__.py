"""The audit log: the record and its hash chain (`record`), the writer that appends and
fsyncs each record before its step is reported done (`writer`), the log's files (rotation, a torn
last line), and verification of what remains.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.audit.files import audit_files
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
    from reconciler.audit.writer import AuditLog

__all__ = [
    "audit_files",
    "AuditLog",
    "Event",
    "EVENTS",
    "JsonValue",
    "parse_ts",
    "Record",
    "REQUIRED_FIELDS",
    "verify",
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
    },
)
