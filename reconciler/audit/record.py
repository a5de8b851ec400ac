"""The audit record: its events, its hash-chain rule, and how field values become JSON.

Records
    One JSON object per line: ``ts`` (RFC 3339 UTC with microseconds), ``seq``, ``event`` (one of
    `EVENTS`), ``revision``, ``prev_hash``, the event's fields, then ``hash``, where::

        hash = sha256_hex(prev_hash + "\\n" + canonical)
        canonical = json.dumps(record_without_hash, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)   # encoded UTF-8

    and the first record's ``prev_hash`` is 64 zeros.

Values
    Fields are converted to JSON: datetimes to RFC 3339 UTC (naive ones are refused: their zone is
    unknown), paths to text, tuples and sets to lists, dataclasses field by field, pydantic models
    through ``model_dump``. Every text (values and keys) goes through the output boundary
    (`reconciler.support.redact.scrub`): undecodable and control characters are escaped and key
    material is redacted, so any text can be recorded and nothing here raises for it.
    `SecretBytes` becomes a placeholder and raw bytes only their size.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Final, Literal, TypeAlias, TypeGuard, get_args

from reconciler.core.secret import SecretBytes
from reconciler.core.timefmt import rfc3339
from reconciler.support.redact import REDACTED, made, scrub

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Record: TypeAlias = dict[str, JsonValue]

Event = Literal[
    "pass.started",
    "change.applied",
    "pass.succeeded",
    "pass.failed",
    "state.rejected",
    "warning",
    "hook.ran",
    "rollback.completed",
    "drift.corrected",
    "recovery.completed",
]
#: Every event the audit log may hold, in the documented order (docs/audit.md).
EVENTS: Final[tuple[Event, ...]] = get_args(Event)
ZERO_HASH: Final = "0" * 64
REQUIRED_FIELDS: Final = ("ts", "seq", "event", "revision", "prev_hash", "hash")
HEX64: Final = re.compile(r"[0-9a-f]{64}")


def chain_hash(prev_hash: str, record: Mapping[str, JsonValue]) -> str:
    """The chain rule: sha256 of prev_hash, a newline and the canonical record without `hash`."""
    body = {key: value for key, value in record.items() if key != "hash"}
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256((prev_hash + "\n" + canonical).encode("utf-8")).hexdigest()


def is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool (JSON's true is no seq)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_ts(text: str) -> datetime | None:
    """A record's `ts` as an aware datetime, or None when it is not a time with a zone."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def event_fields(event: Event, revision: str | None, fields: Mapping[str, object]) -> Record:
    """The event's own fields as JSON values; refuses what must never be logged."""
    if event not in EVENTS:
        raise ValueError(f"audit event {event!r} is not one of {', '.join(EVENTS)}")
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"audit revision must be text or None, not {type(revision).__name__}")
    reserved = sorted(set(fields) & set(REQUIRED_FIELDS))
    if reserved:
        raise ValueError(f"audit fields {', '.join(reserved)} are set by the audit log itself")
    return {_name(key): _to_json(value, key) for key, value in fields.items()}


def _name(key: str) -> str:
    """A field's name: an identifier is the code's own (escaped, not searched); else scrubbed."""
    return made(key) if isinstance(key, str) and key.isidentifier() else scrub(key)


def _to_json(value: object, where: str) -> JsonValue:
    """`value` as JSON (text scrubbed), or TypeError naming the field when it is not JSON."""
    if isinstance(value, SecretBytes):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        # Bytes could be key material: only their size is kept (record a digest instead).
        return f"<{len(value)} bytes withheld>"
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _to_json(value.value, where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"audit field {where!r} is {value}, which JSON cannot represent")
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError(f"audit field {where!r} is a datetime without a timezone")
        # Seconds, or microseconds when the moment has them: nothing is rounded away.
        return rfc3339(value, fraction=bool(value.astimezone(UTC).microsecond))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return _to_json(str(value), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Field by field rather than dataclasses.asdict: asdict deep-copies leaves, and a
        # SecretBytes leaf would fail with a pickling error instead of naming its field.
        return {
            f.name: _to_json(getattr(value, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            name = scrub(key if isinstance(key, str) else str(key))
            out[name] = _to_json(item, f"{where}.{name}")
        return out
    if isinstance(value, list | tuple):
        return [_to_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_to_json(item, f"{where}[]") for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return _to_json(model_dump(mode="json"), where)
    raise TypeError(
        f"audit field {where!r}: a {type(value).__name__} is not JSON-serialisable; "
        "pass text, a number, a mapping, a list or a dataclass"
    )
