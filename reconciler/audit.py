"""Audit: every pass step ends here, as a hash-chained, fsynced JSON Lines record.

Records
    One JSON object per line: ``ts`` (RFC 3339 UTC with microseconds), ``seq``, ``event`` (one of
    `EVENTS`), ``revision``, ``prev_hash``, the event's fields, then ``hash``, where::

        hash = sha256_hex(prev_hash + "\\n" + canonical)
        canonical = json.dumps(record_without_hash, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)   # encoded UTF-8

    and the first record's ``prev_hash`` is 64 zeros. `AuditLog.append` writes the line with one
    ``os.write`` on an ``O_APPEND`` descriptor and ``os.fsync``\\s it before it returns, so the
    caller reports a step done only once its record is on disk. The file is created 0640 (less
    under a stricter umask) and its directory is fsynced when it is created.

Values
    Fields are converted to JSON: datetimes to RFC 3339 UTC (naive ones are refused: their zone is
    unknown), paths to text, tuples and sets to lists, dataclasses field by field, pydantic models
    through ``model_dump``. Every text (values and keys) goes through `reconciler.redact.scrub`:
    undecodable and control characters are escaped and key material is redacted, so any text can
    be recorded and nothing here raises for it. `SecretBytes` becomes a placeholder and raw bytes
    only their size.

Continuity
    ``seq`` and the chain continue across restarts: on open the tail of the file is read from its
    end (a large log costs a few reads). When the current file is empty, the chain continues from
    the newest rotated file next to it (see `audit_files`). Several threads may append (a lock);
    several processes may too (``flock``, and a descriptor that notices another writer's records).

Torn last record
    A crash mid-write can leave a last line without its newline (or a last line that is not a
    valid record). Appending after it would glue the next record onto it, so on open the torn
    bytes are moved to ``PATH.torn-YYYYmmddTHHMMSSZ`` (kept for forensics), the file is truncated
    to its last complete record, and a ``warning`` record with ``reason``, ``torn_bytes``,
    ``torn_offset``, ``torn_file`` and ``torn_sha256`` says so. The daemon keeps running. Damage
    deeper than the last line is not a crash artefact: opening raises `AuditError` naming the file
    and byte offset. Until the log is opened again, `verify` reports the torn line as broken.

Rotation
    `AuditLog.rotate` renames ``audit.jsonl`` to ``audit-YYYYmmddTHHMMSSZ.jsonl`` and starts a new
    file whose first record carries the last hash of the old one as ``prev_hash``, with ``seq``
    continuing. An external rename works the same way: each append compares the path's inode with
    its descriptor's and, when the file was renamed or removed, reopens the path and continues the
    chain. So logrotate may rotate the log with its default ``create`` mode; ``copytruncate`` must
    not be used (it copies without the fsync guarantee and truncation races appends), nor
    ``compress`` (verify reads plain files; decompress rotated files before verifying)::

        /var/lib/reconciler/audit.jsonl {
            monthly
            rotate 24
            nocompress
            nocopytruncate
            create 0640 root adm
        }

    Rotated names recognised: ``audit-YYYYmmddTHHMMSSZ[-N].jsonl`` (ours), ``audit.jsonl.N`` and
    ``audit.jsonl-YYYYmmdd[HH[MM[SS]]]`` (logrotate). They are ordered by their first ``seq``.

Verification
    `verify` recomputes the chain over files given oldest first: the hash of each record, the link
    of each ``prev_hash`` to the previous hash (across files too), ``seq`` strictly increasing by
    one, valid JSON, the required fields, and no torn last line. The first record must have
    ``prev_hash`` 64 zeros and ``seq`` 1 unless ``allow_partial=True`` (older files were deleted
    by retention). A hash chain cannot show that the newest records were cut off at a record
    boundary; while it runs the daemon notices a log that shrank and records a ``warning``.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path, PurePath
from typing import Final, Literal, TypeAlias, TypeGuard, get_args

from reconciler.core.secret import SecretBytes
from reconciler.errors import AuditError
from reconciler.redact import REDACTED, scrub

__all__ = [
    "EVENTS",
    "REQUIRED_FIELDS",
    "ZERO_HASH",
    "AuditLog",
    "BadRecord",
    "Event",
    "JsonValue",
    "Record",
    "VerifyResult",
    "audit_files",
    "chain_hash",
    "verify",
]

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

_CHUNK: Final = 64 * 1024
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_STAMP: Final = "%Y%m%dT%H%M%SZ"


# --- the chain -------------------------------------------------------------------------------


def chain_hash(prev_hash: str, record: Mapping[str, JsonValue]) -> str:
    """The chain rule: sha256 of prev_hash, a newline and the canonical record without `hash`."""
    body = {key: value for key, value in record.items() if key != "hash"}
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256((prev_hash + "\n" + canonical).encode("utf-8")).hexdigest()


def _rfc3339(moment: datetime, *, micro: bool) -> str:
    utc = moment.astimezone(UTC)
    if micro or utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


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
        return _rfc3339(value, micro=False)
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


# --- reading the tail of a file --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Tail:
    last: tuple[int, str] | None
    """seq and hash of the last complete record, if any."""
    torn_at: int | None
    """Byte offset where a torn last line starts."""
    torn_why: str


def _line_start(fd: int, end: int) -> int:
    """Offset just after the last newline before `end` (0 if none), reading backwards."""
    pos = end
    while pos > 0:
        size = min(_CHUNK, pos)
        pos -= size
        found = os.pread(fd, size, pos).rfind(b"\n")
        if found >= 0:
            return pos + found + 1
    return 0


def _parse_head(raw: bytes) -> tuple[int, str] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    seq, digest = record.get("seq"), record.get("hash")
    if _is_int(seq) and isinstance(digest, str) and _HEX64.fullmatch(digest):
        return seq, digest
    return None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_line(fd: int, start: int, end: int) -> bytes:
    return os.pread(fd, end - start, start)


def _inspect_tail(fd: int, path: Path) -> _Tail:
    """The last complete record of `fd` and where a torn last line starts, if there is one."""
    size = os.fstat(fd).st_size
    if size == 0:
        return _Tail(None, None, "")
    torn_at: int | None = None
    why = ""
    end = size
    if os.pread(fd, 1, size - 1) != b"\n":
        torn_at = end = _line_start(fd, size)
        why = "it has no trailing newline"
    if end == 0:
        return _Tail(None, torn_at, why)
    start = _line_start(fd, end - 1)
    last = _parse_head(_read_line(fd, start, end - 1))
    if last is None and torn_at is None:
        # A complete but unreadable last line: treated as torn too, it cannot be chained onto.
        torn_at, why, end = start, "it is not a valid audit record", start
        if end == 0:
            return _Tail(None, torn_at, why)
        start = _line_start(fd, end - 1)
        last = _parse_head(_read_line(fd, start, end - 1))
    if last is None:
        raise AuditError(
            f"audit log {path}: the record at byte {start} is not a valid audit record and is "
            "not the last line, so it is not a crash artefact; run `reconciler audit verify`, "
            "then move the damaged file aside (the chain restarts in a new file)"
        )
    return _Tail(last, torn_at, why)


def _first_seq(path: Path) -> int | None:
    try:
        with path.open("rb") as stream:
            head = stream.readline(1 << 20)
    except OSError:
        return None
    try:
        record = json.loads(head)
    except ValueError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def audit_files(path: Path) -> list[Path]:
    """The rotated files of the audit log at `path`, oldest first, then `path` if it exists."""
    path = Path(path)
    name, stem, suffix = re.escape(path.name), re.escape(path.stem), re.escape(path.suffix)
    rotated = re.compile(
        rf"{stem}-\d{{8}}T\d{{6}}Z(?:-\d+)?{suffix}|{name}\.\d+|{name}-\d{{8}}(?:\d{{2}}){{0,3}}"
    )
    try:
        candidates = [p for p in path.parent.iterdir() if rotated.fullmatch(p.name) and p.is_file()]
    except FileNotFoundError:
        return []

    def order(candidate: Path) -> tuple[bool, int, float, str]:
        seq = _first_seq(candidate)
        return seq is None, seq or 0, candidate.stat().st_mtime, candidate.name

    files = sorted(candidates, key=order)
    if path.is_file():
        files.append(path)
    return files


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unique(candidate: Callable[[int], Path]) -> Path:
    n = 0
    while candidate(n).exists():
        n += 1
    return candidate(n)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the writer ------------------------------------------------------------------------------


class AuditLog:
    """The append-only audit log at `path`; see the module docstring for its guarantees."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._fd = -1
        self._ident = (0, 0)
        self._size = 0
        """Bytes the file holds as far as this writer knows; another writer's records differ."""
        self._seq = 0
        self._hash = ZERO_HASH
        self._positioned = False
        """Whether _seq and _hash are the chain's true position (read from a file or written)."""
        with self._lock:
            self._open()
            try:
                self._flush_warnings(self._sync())
            except BaseException:
                os.close(self._fd)
                self._fd = -1
                raise
            self._release()

    # The public surface.

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def last_hash(self) -> str:
        return self._hash

    def append(self, event: Event, revision: str | None, **fields: object) -> Record:
        """Write one record, fsynced, and return it; AuditError if it could not be written."""
        return self.append_many([(event, revision, fields)])[0]

    def append_many(
        self, entries: Sequence[tuple[Event, str | None, Mapping[str, object]]]
    ) -> list[Record]:
        """Write several records with one write and one fsync (a pass's changes, say), in order.

        All or none are checked before anything is written; the chain runs through them as if
        appended one by one.
        """
        bodies = [
            (event, revision, _body(event, revision, fields)) for event, revision, fields in entries
        ]
        with self._lock:
            self._acquire()
            try:
                self._flush_warnings(self._sync())
                return self._write(bodies)
            finally:
                self._release()

    def rotate(self) -> Path | None:
        """Rename the file to `STEM-YYYYmmddTHHMMSSZ.SUFFIX`; the chain continues in a new file.

        Returns the rotated file, or None when the current file is empty (nothing to rotate).
        """
        with self._lock:
            self._acquire()
            try:
                self._flush_warnings(self._sync())
                if self._size == 0:
                    return None
                stamp = self._clock().astimezone(UTC).strftime(_STAMP)
                parent, stem, suffix = self.path.parent, self.path.stem, self.path.suffix
                target = _unique(lambda n: parent / f"{stem}-{stamp}{f'-{n}' if n else ''}{suffix}")
                try:
                    self.path.rename(target)
                    _fsync_dir(parent)
                except OSError as exc:
                    raise AuditError(
                        f"audit log {self.path}: cannot rotate to {target}: {exc.strerror}"
                    ) from exc
                old = self._fd
                self._open()
                self._size = 0
                os.close(old)
                return target
            finally:
                self._release()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # File handling; every method below runs with self._lock held.

    def _open(self) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o640)
                _fsync_dir(self.path.parent)
            except FileExistsError:
                fd = os.open(self.path, flags)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise AuditError(f"audit log {self.path}: cannot open: {exc.strerror}") from exc
        stat = os.fstat(fd)
        self._fd, self._ident = fd, (stat.st_dev, stat.st_ino)

    def _acquire(self) -> None:
        """flock the file at self.path, reopening it when it was renamed or removed."""
        if self._fd < 0:
            raise AuditError(f"audit log {self.path}: already closed")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        while True:
            try:
                stat = self.path.stat()
                current = (stat.st_dev, stat.st_ino)
            except FileNotFoundError:
                current = None
            if current == self._ident:
                return
            # Rotated away: records another process added to the old file come first.
            if os.fstat(self._fd).st_size != self._size:
                tail = _inspect_tail(self._fd, self.path)
                if tail.last is not None:
                    self._seq, self._hash = tail.last
            old = self._fd
            self._open()
            os.close(old)
            self._size = 0

    def _release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _sync(self) -> list[Record]:
        """Bring seq and hash up to date with the file; return warning fields to record."""
        size = os.fstat(self._fd).st_size
        if self._positioned and size == self._size:
            return []
        warnings: list[Record] = []
        tail = _inspect_tail(self._fd, self.path)
        if tail.torn_at is not None:
            warnings.append(self._set_aside(tail.torn_at, size, tail.torn_why))
        if not self._positioned:
            if tail.last is not None:
                self._seq, self._hash = tail.last
            else:
                warnings.extend(self._continue_from_rotated())
        elif size > self._size:
            # Another writer (a CLI command) appended: continue after its records.
            if tail.last is not None:
                self._seq, self._hash = tail.last
        elif size < self._size:
            # Keep our position: the next record's seq and prev_hash then show the gap to verify.
            warnings.append(
                {
                    "reason": f"audit log {self.path} shrank from {self._size} to {size} bytes "
                    "while reconciler had it open: records were removed outside reconciler",
                    "expected_bytes": self._size,
                    "found_bytes": size,
                }
            )
        self._size = os.fstat(self._fd).st_size
        self._positioned = True
        return warnings

    def _continue_from_rotated(self) -> list[Record]:
        for older in reversed([p for p in audit_files(self.path) if p != self.path]):
            try:
                fd = os.open(older, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise AuditError(
                    f"audit log {self.path}: cannot read the rotated file {older} to continue "
                    f"the chain: {exc.strerror}"
                ) from exc
            try:
                tail = _inspect_tail(fd, older)
            finally:
                os.close(fd)
            if tail.last is None:
                continue
            self._seq, self._hash = tail.last
            if tail.torn_at is None:
                return []
            return [
                {
                    "reason": f"rotated audit log {older} ends with a torn record at byte "
                    f"{tail.torn_at} ({tail.torn_why}); the chain continues from its last "
                    "complete record",
                    "torn_offset": tail.torn_at,
                    "torn_file": str(older),
                }
            ]
        return []

    def _set_aside(self, offset: int, size: int, why: str) -> Record:
        """Move a torn last line to PATH.torn-STAMP and truncate the file before it."""
        torn = os.pread(self._fd, size - offset, offset)
        stamp = self._clock().astimezone(UTC).strftime(_STAMP)
        parent, name = self.path.parent, self.path.name
        target = _unique(lambda n: parent / f"{name}.torn-{stamp}{f'-{n}' if n else ''}")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, torn)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
            _fsync_dir(parent)
        except OSError as exc:
            raise AuditError(
                f"audit log {self.path}: cannot move its torn last record (byte {offset}) "
                f"to {target}: {exc.strerror}"
            ) from exc
        return {
            "reason": f"audit log {self.path} had a torn last record at byte {offset} ({why}), "
            f"most likely from a crash mid-write; its {len(torn)} bytes were moved to {target} "
            "and the chain continues from the last complete record",
            "torn_bytes": len(torn),
            "torn_offset": offset,
            "torn_file": str(target),
            "torn_sha256": hashlib.sha256(torn).hexdigest(),
        }

    def _flush_warnings(self, warnings: list[Record]) -> None:
        if warnings:
            self._write([("warning", None, fields) for fields in warnings])

    def _write(self, bodies: Sequence[tuple[Event, str | None, Record]]) -> list[Record]:
        records: list[Record] = []
        lines: list[bytes] = []
        seq, previous = self._seq, self._hash
        for event, revision, body in bodies:
            seq += 1
            record: Record = {
                "ts": _rfc3339(self._clock(), micro=True),
                "seq": seq,
                "event": event,
                "revision": revision,
                "prev_hash": previous,
                **body,
            }
            previous = chain_hash(previous, record)
            record["hash"] = previous
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            lines.append((line + "\n").encode("utf-8"))
            records.append(record)
        data = b"".join(lines)
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(0, f"short write ({written} of {len(data)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            # The file's end is now unknown; the next call re-reads it (and sets a torn line aside).
            self._size = -1
            events = ", ".join(str(b[0]) for b in bodies)
            raise AuditError(
                f"audit log {self.path}: cannot write record {self._seq + 1} ({events}): "
                f"{exc.strerror}; the step it records is not done"
            ) from exc
        self._seq, self._hash, self._size = seq, previous, self._size + len(data)
        return [dict(record) for record in records]


def _body(event: Event, revision: str | None, fields: Mapping[str, object]) -> Record:
    """The event's own fields as JSON values; refuses what must never be logged."""
    if event not in EVENTS:
        raise ValueError(f"audit event {event!r} is not one of {', '.join(EVENTS)}")
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"audit revision must be text or None, not {type(revision).__name__}")
    reserved = sorted(set(fields) & set(REQUIRED_FIELDS))
    if reserved:
        raise ValueError(f"audit fields {', '.join(reserved)} are set by the audit log itself")
    return {scrub(key): _to_json(value, key) for key, value in fields.items()}


# --- verification ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BadRecord:
    """Where the chain first breaks, and why."""

    file: Path
    line_no: int
    seq: int | None
    reason: str

    def __str__(self) -> str:
        what = f"record {self.seq}" if self.seq is not None else "a record"
        return f"{what} (line {self.line_no} of {self.file}): {self.reason}"


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    records: int
    """Records checked and found good (all of them when ok)."""
    first_bad: BadRecord | None
    last_seq: int | None = None
    last_hash: str | None = None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _check_line(raw: bytes) -> tuple[Record | None, str]:
    if not raw.endswith(b"\n"):
        return None, (
            "torn last line (no trailing newline): a write was interrupted; the daemon moves it "
            "aside to a .torn- file the next time it opens the log"
        )
    try:
        record = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        return record, f"missing field(s) {', '.join(missing)}"
    seq = record["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return record, f"seq {seq!r} is not a positive integer"
    for name in ("prev_hash", "hash"):
        if not isinstance(record[name], str) or not _HEX64.fullmatch(record[name]):
            return record, f"{name} is not 64 lowercase hex digits"
    if not isinstance(record["event"], str):
        return record, "event is not text"
    if record["revision"] is not None and not isinstance(record["revision"], str):
        return record, "revision is neither text nor null"
    ts = record["ts"]
    if not isinstance(ts, str) or parse_ts(ts) is None:
        return record, f"ts {ts!r} is not an RFC 3339 UTC time"
    return record, ""


def parse_ts(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _link_error(
    record: Record, seq: int, last: tuple[int, str] | None, prev_file: Path | None, partial: bool
) -> str:
    """Why `record` does not follow `last` (seq and hash of the previous record), or ""."""
    if last is None:
        if partial:
            return ""
        if record["prev_hash"] != ZERO_HASH:
            return (
                "the first record's prev_hash is not 64 zeros: the log does not start at its "
                "beginning (records deleted, or older rotated files missing: pass every file "
                "oldest first, or allow a partial check)"
            )
        if seq != 1:
            return f"the first record has seq {seq}, not 1: records before it were deleted"
        return ""
    last_seq, last_hash = last
    if seq > last_seq + 1:
        gap = f"{last_seq + 1}" if seq == last_seq + 2 else f"{last_seq + 1}-{seq - 1}"
        return f"seq jumps from {last_seq} to {seq}: record {gap} was deleted or moved"
    if seq <= last_seq:
        return f"seq goes from {last_seq} back to {seq}: records were reordered or duplicated"
    if record["prev_hash"] == last_hash:
        return ""
    if prev_file is not None:
        return (
            f"prev_hash does not match the last hash of {prev_file} (record {last_seq}): "
            "files out of order, a file missing, or records deleted"
        )
    return f"prev_hash does not match record {last_seq}'s hash: records reordered or deleted"


def verify(paths: Sequence[Path], *, allow_partial: bool = False) -> VerifyResult:
    """Recompute the chain over `paths`, oldest first; name the first bad record and why."""
    count = 0
    last: tuple[int, str] | None = None
    last_file: Path | None = None
    for path in map(Path, paths):
        try:
            stream = path.open("rb")
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror}"
            return VerifyResult(False, count, BadRecord(path, 0, None, reason), *_unpack(last))
        with stream:
            first_in_file = True
            for line_no, raw in enumerate(stream, start=1):
                record, reason = _check_line(raw)
                seq = record.get("seq") if record is not None else None
                if record is not None and not reason and _is_int(seq):
                    if chain_hash(str(record["prev_hash"]), record) != record["hash"]:
                        reason = "hash mismatch: the record was edited"
                    else:
                        boundary = last_file if first_in_file else None
                        reason = _link_error(record, seq, last, boundary, allow_partial)
                    if not reason:
                        count += 1
                        last = seq, str(record["hash"])
                        first_in_file = False
                        continue
                where = BadRecord(path, line_no, seq if _is_int(seq) else None, reason)
                return VerifyResult(False, count, where, *_unpack(last))
            if not first_in_file:
                last_file = path
    return VerifyResult(True, count, None, *_unpack(last))


def _unpack(last: tuple[int, str] | None) -> tuple[int | None, str | None]:
    return (None, None) if last is None else last
