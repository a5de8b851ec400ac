"""The head of the chain: reading it, reading heads kept elsewhere, checking a log against them.

A head is the ``seq`` and ``hash`` of a log's last record. Because each hash covers every record
before it, a head published off the box pins the whole log up to that record: to change any of
those records without the change showing, an attacker would have to change the published head
too. `read_head` reads a log's head without writing anything.

Witness files
    One head per line, ``SEQ HASH`` (decimal seq, 64 hex digits), in any order, repeated or not;
    blank lines and everything from a ``#`` on are ignored. Anything else is an error naming the
    source, the line and the reason: a file that cannot be read as heads proves nothing.

Checking (`check_witnessed`)
    Each witnessed head is compared with the log's record of that seq. A head older than the
    oldest record left (rotated files deleted by retention) is not checkable, which is no failure.
    The failures, each naming the first witnessed seq it concerns:

    * truncated: a witnessed seq beyond the log's last record;
    * rewritten: a witnessed record whose hash differs, or that is missing inside the log;
    * forked: the witnessed heads themselves come from two chains: one seq witnessed with two
      hashes, or a witnessed record that differs while a later witnessed one matches (the log was
      replaced and the writer went on with the replacement).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final, Literal

from reconciler.audit.files import inspect_tail, rotated_position
from reconciler.audit.record import HEX64, is_int
from reconciler.errors import AuditError

#: A witness line longer than this is no head (a head line is about 70 bytes).
MAX_LINE: Final = 4096
_SEQ: Final = re.compile(r"[0-9]{1,19}")
_MAX_SEQ: Final = 2**63 - 1
_SHORT: Final = 12

FailureKind = Literal["truncated", "rewritten", "forked"]


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class Head:
    """The seq and hash of a log's last record: what is published and witnessed."""

    seq: int
    hash: str

    def line(self) -> str:
        """``SEQ HASH`` and a newline: what a witness command reads and a witness file holds."""
        return f"{self.seq} {self.hash}\n"


def read_head(path: Path) -> Head | None:
    """The head of the audit log at `path` (its current file, else the newest rotated file with
    a record), or None before the first record. Reads only; a torn last line is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        last = None
    except OSError as exc:
        raise AuditError(f"audit log {path}: cannot read: {exc.strerror}") from exc
    else:
        try:
            last = inspect_tail(fd, path).last
        finally:
            os.close(fd)
    if last is None:
        last, _ = rotated_position(path)
    return None if last is None else Head(*last)


# -- witness files -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Witnessed:
    """A head as a witness holds it, and where: the source's name and line."""

    head: Head
    source: str
    line_no: int

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line_no}"


def parse_head_line(text: str) -> Head | None:
    """The head on one witness line; None for a blank or comment line; ValueError saying why
    the line is no head."""
    fields = text.split("#", 1)[0].split()
    if not fields:
        return None
    if len(fields) != 2:
        raise ValueError(f"expected SEQ HASH, found {len(fields)} field(s)")
    seq, digest = fields[0], fields[1].lower()
    if not _SEQ.fullmatch(seq) or not 0 < int(seq) <= _MAX_SEQ:
        raise ValueError(f"seq {seq[:24]!r} is not a positive integer")
    if not HEX64.fullmatch(digest):
        raise ValueError(f"hash {digest[:24]!r} is not 64 hex digits")
    return Head(int(seq), digest)


def parse_heads(stream: BinaryIO, source: str) -> Iterator[Witnessed]:
    """Every head in `stream` (see the module docstring); AuditError naming `source` and the line
    for anything that is not one."""
    for line_no, raw in enumerate(iter(lambda: stream.readline(MAX_LINE + 1), b""), start=1):
        where = f"witness {source} line {line_no}"
        if len(raw) > MAX_LINE:
            raise AuditError(f"{where}: longer than {MAX_LINE} bytes: not a SEQ HASH line")
        try:
            head = parse_head_line(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise AuditError(f"{where}: not UTF-8 text") from None
        except ValueError as exc:
            raise AuditError(f"{where}: {exc}") from None
        if head is not None:
            yield Witnessed(head, source, line_no)


def read_witnessed(source: str) -> list[Witnessed]:
    """The heads of the witness file `source` (``-``: standard input). A regular file or a pipe
    (``<(...)``); anything else, or a file that cannot be read, is an AuditError naming it."""
    if source == "-":
        return list(parse_heads(sys.stdin.buffer, "(standard input)"))
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise AuditError(f"witness {source}: cannot read: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise AuditError(f"witness {source}: not a regular file or a pipe")
    with os.fdopen(fd, "rb") as stream:
        try:
            return list(parse_heads(stream, source))
        except OSError as exc:
            raise AuditError(f"witness {source}: cannot read: {exc.strerror}") from exc


# -- checking ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class WitnessFailure:
    """One way the log fails its witnesses, at the first witnessed seq it concerns."""

    kind: FailureKind
    seq: int
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclasses.dataclass(frozen=True, slots=True)
class WitnessReport:
    """What the log's records say about every witnessed head."""

    heads: int
    """Distinct witnessed heads."""
    matched: int
    not_checkable: int
    """Heads older than the oldest record left (retention): neither proven nor failed."""
    first_seq: int | None
    """The oldest record left, and the last: None when the log holds none."""
    last_seq: int | None
    failures: tuple[WitnessFailure, ...]
    """Ordered by the seq they name: the first is the first witnessed seq that fails."""

    @property
    def ok(self) -> bool:
        return not self.failures and self.heads > 0


def _log_hashes(
    files: Sequence[Path], wanted: set[int]
) -> tuple[dict[int, str], int | None, int | None]:
    """The stored hash of every record in `files` whose seq is in `wanted` (the first one, if a
    broken log holds a seq twice), and the first and last seq of the log."""
    found: dict[int, str] = {}
    first: int | None = None
    last: int | None = None
    for path in files:
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise AuditError(f"audit log {path}: cannot read: {exc.strerror}") from exc
        with stream:
            for raw in stream:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # the chain check names what is wrong with it
                if not isinstance(record, dict):
                    continue
                seq, digest = record.get("seq"), record.get("hash")
                if not is_int(seq) or not isinstance(digest, str):
                    continue
                first = seq if first is None else first
                last = seq
                if seq in wanted:
                    found.setdefault(seq, digest)
    return found, first, last


def _short(digest: str) -> str:
    return digest[:_SHORT] + ".."


def check_witnessed(files: Sequence[Path], witnessed: Iterable[Witnessed]) -> WitnessReport:
    """Check the log made of `files` (oldest first) against `witnessed` heads."""
    by_seq: dict[int, dict[str, Witnessed]] = {}
    for item in witnessed:
        by_seq.setdefault(item.head.seq, {}).setdefault(item.head.hash, item)
    log, first, last = _log_hashes(files, set(by_seq))
    failures: list[WitnessFailure] = []
    matched: list[int] = []
    differs: list[tuple[int, Witnessed]] = []
    not_checkable = 0
    for seq in sorted(by_seq):
        hashes = by_seq[seq]
        if len(hashes) > 1:
            one, other = list(hashes.values())[:2]
            failures.append(
                WitnessFailure(
                    "forked", seq,
                    f"seq {seq} was witnessed with two hashes ({_short(one.head.hash)} in "
                    f"{one.where}, {_short(other.head.hash)} in {other.where}): the witnesses "
                    "saw two chains",
                )
            )  # fmt: skip
            continue
        (item,) = hashes.values()
        if first is None or last is None or seq > last:
            continue  # truncated: reported once below, for the first such seq
        if seq < first:
            not_checkable += 1
        elif log.get(seq) == item.head.hash:
            matched.append(seq)
        else:
            differs.append((seq, item))
    if differs:
        seq, item = differs[0]
        failures.append(_differs(seq, item, log.get(seq), matched))
    beyond = [seq for seq in sorted(by_seq) if last is None or seq > last]
    if beyond:
        item = next(iter(by_seq[beyond[0]].values()))
        end = f"log ends at {last}" if last is not None else "the log holds no record"
        highest = f" (the highest witnessed is {beyond[-1]})" if len(beyond) > 1 else ""
        failures.append(
            WitnessFailure(
                "truncated",
                beyond[0],
                f"witnessed seq {beyond[0]} ({item.where}), {end}{highest}",
            )
        )
    failures.sort(key=lambda failure: failure.seq)
    return WitnessReport(
        heads=sum(len(hashes) for hashes in by_seq.values()),
        matched=len(matched),
        not_checkable=not_checkable,
        first_seq=first,
        last_seq=last,
        failures=tuple(failures),
    )


def _differs(seq: int, item: Witnessed, found: str | None, matched: list[int]) -> WitnessFailure:
    """The first witnessed record that does not match: rewritten (or missing), or forked when a
    later witnessed record matches again."""
    if found is None:
        return WitnessFailure(
            "rewritten",
            seq,
            f"record {seq} differs from its witness ({item.where}): the log has no such record "
            "(deleted; the chain check names the gap)",
        )
    what = (
        f"record {seq} differs from its witness ({_short(item.head.hash)} in {item.where}; "
        f"the log has {_short(found)})"
    )
    later = [m for m in matched if m > seq]
    if later:
        return WitnessFailure(
            "forked",
            seq,
            f"{what}, but record {later[0]}, witnessed later, matches: the log was replaced or "
            f"rewritten after seq {seq} was witnessed, and the writer went on with it",
        )
    earlier = [m for m in matched if m < seq]
    where = (
        f"the log matches its witnesses up to seq {earlier[-1]}"
        if earlier
        else "no witnessed record matches: the log was replaced, or rewritten from its start"
    )
    return WitnessFailure("rewritten", seq, f"{what}; {where}")
