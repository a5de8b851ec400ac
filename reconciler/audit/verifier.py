"""Audit chain verification: recompute every hash and link, name the first bad record and why.

`verify` recomputes the chain over files given oldest first: the hash of each record, the link
of each ``prev_hash`` to the previous hash (across files too), ``seq`` strictly increasing by
one, valid JSON, the required fields, and no torn last line. The first record must have
``prev_hash`` 64 zeros and ``seq`` 1 unless ``allow_partial=True`` (older files were deleted
by retention). A hash chain cannot show that the newest records were cut off at a record
boundary; while it runs the daemon notices a log that shrank and records a ``warning``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from reconciler.audit.record import (
    HEX64,
    REQUIRED_FIELDS,
    ZERO_HASH,
    Record,
    chain_hash,
    is_int,
    parse_ts,
)


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
        if not isinstance(record[name], str) or not HEX64.fullmatch(record[name]):
            return record, f"{name} is not 64 lowercase hex digits"
    if not isinstance(record["event"], str):
        return record, "event is not text"
    if record["revision"] is not None and not isinstance(record["revision"], str):
        return record, "revision is neither text nor null"
    ts = record["ts"]
    if not isinstance(ts, str) or parse_ts(ts) is None:
        return record, f"ts {ts!r} is not an RFC 3339 UTC time"
    return record, ""


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
                if record is not None and not reason and is_int(seq):
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
                where = BadRecord(path, line_no, seq if is_int(seq) else None, reason)
                return VerifyResult(False, count, where, *_unpack(last))
            if not first_in_file:
                last_file = path
    return VerifyResult(True, count, None, *_unpack(last))


def _unpack(last: tuple[int, str] | None) -> tuple[int | None, str | None]:
    return (None, None) if last is None else last
