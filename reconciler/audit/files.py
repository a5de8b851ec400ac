"""The audit log's files: reading a file's tail, setting a torn last line aside, rotated files.

Torn last record
    A crash mid-write can leave a last line without its newline (or a last line that is not a
    valid record). Appending after it would glue the next record onto it, so on open the torn
    bytes are moved to ``PATH.torn-YYYYmmddTHHMMSSZ`` (kept for forensics), the file is truncated
    to its last complete record, and a ``warning`` record with ``reason``, ``torn_bytes``,
    ``torn_offset``, ``torn_file`` and ``torn_sha256`` says so. The daemon keeps running. Damage
    deeper than the last line is not a crash artefact: opening raises `AuditError` naming the file
    and byte offset. Until the log is opened again, `verify` reports the torn line as broken.

Rotation
    The log is rotated from outside, by renaming ``audit.jsonl``: the writer notices the rename at
    its next record and continues the chain in a new file (its first record carries the last hash
    of the old one as ``prev_hash``, with ``seq`` continuing). So logrotate may rotate the log with
    its default ``create`` mode; ``copytruncate`` must not be used (it copies without the fsync
    guarantee and truncation races appends), nor ``compress`` (verify reads plain files;
    decompress rotated files before verifying)::

        /var/lib/reconciler/audit.jsonl {
            monthly
            rotate 24
            nocompress
            nocopytruncate
            create 0640 root adm
        }

    Rotated names recognised: ``audit-YYYYmmddTHHMMSSZ[-N].jsonl``, ``audit.jsonl.N`` and
    ``audit.jsonl-YYYYmmdd[HH[MM[SS]]]`` (logrotate). They are ordered by their first ``seq``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

from reconciler.audit.record import HEX64, Record, is_int
from reconciler.core.timefmt import rfc3339
from reconciler.errors import AuditError
from reconciler.support.fsio import fsync_dir

_CHUNK: Final = 64 * 1024
_BASIC_FORM: Final = str.maketrans("", "", "-:")
"""RFC 3339 time to its basic form (20261127T171314Z), for a file name."""

Position = tuple[int, str]
"""seq and hash of a record: where the chain continues after it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Tail:
    """How an audit file ends."""

    last: Position | None
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


def _parse_head(raw: bytes) -> Position | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    seq, digest = record.get("seq"), record.get("hash")
    if is_int(seq) and isinstance(digest, str) and HEX64.fullmatch(digest):
        return seq, digest
    return None


def _read_line(fd: int, start: int, end: int) -> bytes:
    return os.pread(fd, end - start, start)


def inspect_tail(fd: int, path: Path) -> Tail:
    """The last complete record of `fd` and where a torn last line starts, if there is one."""
    size = os.fstat(fd).st_size
    if size == 0:
        return Tail(None, None, "")
    torn_at: int | None = None
    why = ""
    end = size
    if os.pread(fd, 1, size - 1) != b"\n":
        torn_at = end = _line_start(fd, size)
        why = "it has no trailing newline"
    if end == 0:
        return Tail(None, torn_at, why)
    start = _line_start(fd, end - 1)
    last = _parse_head(_read_line(fd, start, end - 1))
    if last is None and torn_at is None:
        # A complete but unreadable last line: treated as torn too, it cannot be chained onto.
        torn_at, why, end = start, "it is not a valid audit record", start
        if end == 0:
            return Tail(None, torn_at, why)
        start = _line_start(fd, end - 1)
        last = _parse_head(_read_line(fd, start, end - 1))
    if last is None:
        raise AuditError(
            f"audit log {path}: the record at byte {start} is not a valid audit record and is "
            "not the last line, so it is not a crash artefact; run `reconciler audit verify`, "
            "then move the damaged file aside (the chain restarts in a new file)"
        )
    return Tail(last, torn_at, why)


def set_aside(fd: int, path: Path, offset: int, why: str, now: datetime) -> Record:
    """Move the torn last line of `fd` (the file at `path`, from `offset` on) to
    PATH.torn-STAMP, truncate the file before it, and return the warning's fields."""
    size = os.fstat(fd).st_size
    torn = os.pread(fd, size - offset, offset)
    stamp = rfc3339(now).translate(_BASIC_FORM)
    parent, name = path.parent, path.name
    target = _unique(lambda n: parent / f"{name}.torn-{stamp}{f'-{n}' if n else ''}")
    try:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            os.write(out, torn)
            os.fsync(out)
        finally:
            os.close(out)
        os.ftruncate(fd, offset)
        os.fsync(fd)
        fsync_dir(parent)
    except OSError as exc:
        raise AuditError(
            f"audit log {path}: cannot move its torn last record (byte {offset}) "
            f"to {target}: {exc.strerror}"
        ) from exc
    return {
        "reason": f"audit log {path} had a torn last record at byte {offset} ({why}), "
        f"most likely from a crash mid-write; its {len(torn)} bytes were moved to {target} "
        "and the chain continues from the last complete record",
        "torn_bytes": len(torn),
        "torn_offset": offset,
        "torn_file": str(target),
        "torn_sha256": hashlib.sha256(torn).hexdigest(),
    }


def rotated_position(path: Path) -> tuple[Position | None, list[Record]]:
    """Where the chain of the log at `path` continues when its current file holds no record:
    the last record of the newest rotated file that has one, and warning fields (a torn end)."""
    for older in reversed([p for p in audit_files(path) if p != path]):
        try:
            fd = os.open(older, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise AuditError(
                f"audit log {path}: cannot read the rotated file {older} to continue "
                f"the chain: {exc.strerror}"
            ) from exc
        try:
            tail = inspect_tail(fd, older)
        finally:
            os.close(fd)
        if tail.last is None:
            continue
        if tail.torn_at is None:
            return tail.last, []
        warning: Record = {
            "reason": f"rotated audit log {older} ends with a torn record at byte "
            f"{tail.torn_at} ({tail.torn_why}); the chain continues from its last "
            "complete record",
            "torn_offset": tail.torn_at,
            "torn_file": str(older),
        }
        return tail.last, [warning]
    return None, []


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
    return seq if is_int(seq) else None


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


def _unique(candidate: Callable[[int], Path]) -> Path:
    n = 0
    while candidate(n).exists():
        n += 1
    return candidate(n)
