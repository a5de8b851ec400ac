"""The audit log's writer: every pass step ends here, as a hash-chained, fsynced JSON Lines record.

Durability
    `AuditLog.append` writes the line with one ``os.write`` on an ``O_APPEND`` descriptor and
    ``os.fsync``\\s it before it returns, so the caller reports a step done only once its record is
    on disk. A caller that makes other files durable at the same moment may instead append with
    ``sync=False`` and run `AuditLog.sync` in the same batch of fsyncs, before it reports the step
    done. The file is created 0640 (less under a stricter umask) and its directory is fsynced
    when it is created. The record format is `reconciler.audit.record`'s; rotated and torn files
    are `reconciler.audit.files`'; checking a log is `reconciler.audit.verifier`'s.

Continuity
    ``seq`` and the chain continue across restarts: on open the tail of the file is read from its
    end (a large log costs a few reads). When the current file is empty, the chain continues from
    the newest rotated file next to it (see `audit_files`). Several threads may append (a lock);
    several processes may too (``flock``, and a descriptor that notices another writer's records).
    Each append compares the path's inode with its descriptor's and, when the file was renamed
    (rotated) or removed, reopens the path and continues the chain there.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from reconciler.audit.files import inspect_tail, rotated_position, set_aside
from reconciler.audit.record import ZERO_HASH, Event, Record, chain_hash, event_fields
from reconciler.audit.witness import Head
from reconciler.core.timefmt import rfc3339
from reconciler.errors import AuditError
from reconciler.support.fsio import fsync_dir


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        self.appended = 0
        """Records this writer wrote, warnings included: a head to publish when it grew."""
        self._unsynced = 0  # records written since the last fsync (appended with sync=False)
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

    @property
    def head(self) -> Head | None:
        """seq and hash of the last record as this writer knows it (None before the first)."""
        return Head(self._seq, self._hash) if self._seq else None

    def append(self, event: Event, revision: str | None, **fields: object) -> Record:
        """Write one record, fsynced, and return it; AuditError if it could not be written."""
        return self.append_many([(event, revision, fields)])[0]

    def append_many(
        self,
        entries: Sequence[tuple[Event, str | None, Mapping[str, object]]],
        *,
        sync: bool = True,
    ) -> list[Record]:
        """Write several records with one write and one fsync (a pass's changes, say), in order.

        All or none are checked before anything is written; the chain runs through them as if
        appended one by one. `sync=False`: not fsynced here; the caller runs `sync` before it
        reports the step done.
        """
        bodies = [
            (event, revision, event_fields(event, revision, fields))
            for event, revision, fields in entries
        ]
        with self._lock:
            self._acquire()
            try:
                self._flush_warnings(self._sync())
                return self._write(bodies, sync=sync)
            finally:
                self._release()

    def sync(self) -> None:
        """Make every record written so far durable; AuditError if it cannot."""
        with self._lock:
            if not self._unsynced or self._fd < 0:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._size = -1  # what reached the disk is unknown: re-read at the next append
                raise AuditError(
                    f"audit log {self.path}: cannot make records {self._seq - self._unsynced + 1}"
                    f" to {self._seq} durable: {exc.strerror}; the step they record is not done"
                ) from exc
            self._unsynced = 0

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
        # Never through a link someone put where the log belongs: records are appended.
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o640)
                fsync_dir(self.path.parent)
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
                tail = inspect_tail(self._fd, self.path)
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
        tail = inspect_tail(self._fd, self.path)
        if tail.torn_at is not None:
            now = self._clock()
            warnings.append(set_aside(self._fd, self.path, tail.torn_at, tail.torn_why, now))
        if not self._positioned:
            last, found = (tail.last, []) if tail.last is not None else rotated_position(self.path)
            if last is not None:
                self._seq, self._hash = last
            warnings.extend(found)
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

    def _flush_warnings(self, warnings: list[Record]) -> None:
        if warnings:
            self._write([("warning", None, fields) for fields in warnings])

    def _write(
        self, bodies: Sequence[tuple[Event, str | None, Record]], *, sync: bool = True
    ) -> list[Record]:
        records: list[Record] = []
        lines: list[bytes] = []
        seq, previous = self._seq, self._hash
        for event, revision, body in bodies:
            seq += 1
            record: Record = {
                "ts": rfc3339(self._clock(), fraction=True),
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
            if sync:
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
        self.appended += len(records)
        self._unsynced = 0 if sync else self._unsynced + len(bodies)
        return [dict(record) for record in records]
