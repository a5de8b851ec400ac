"""The operator's view of the audit log: `audit show` filters and readable columns."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.audit import (
    REQUIRED_FIELDS,
    ZERO_HASH,
    JsonValue,
    Record,
    check_witnessed,
    parse_ts,
    read_witnessed,
    verify,
)
from reconciler.core.timefmt import rfc3339
from reconciler.support.redact import scrub_line

_DURATION = re.compile(r"(?:\d+[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: an ISO 8601 date or time (UTC unless it has a zone) or a duration before `now`.

    Durations are one or more NUMBER+UNIT with units s, m, h, d, w: `30s`, `15m`, `2h`, `7d`,
    `1h30m`. The result is timezone-aware UTC.
    """
    spec = text.strip()
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if _DURATION.fullmatch(spec):
        seconds = sum(
            int(number) * _UNIT_SECONDS[unit] for number, unit in re.findall(r"(\d+)(\D)", spec)
        )
        try:
            return (now - timedelta(seconds=seconds)).astimezone(UTC)
        except OverflowError as exc:
            raise ValueError(f"{text!r}: the duration reaches too far back") from exc
    try:
        moment = datetime.fromisoformat(spec)
    except ValueError:
        raise ValueError(
            f"{text!r}: not an ISO 8601 date or time (2026-11-27, "
            "2026-11-27T17:13:14Z, 2026-11-27T18:13+01:00) nor a duration (30s, 15m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _matches(
    record: Record,
    since: datetime | None,
    kinds: set[str] | None,
    events: set[str] | None,
    revision: str | None,
) -> bool:
    if since is not None:
        ts = record.get("ts")
        moment = parse_ts(ts) if isinstance(ts, str) else None
        if moment is None or moment < since:
            return False
    if kinds is not None:
        many = record.get("kinds")
        mine = {record.get("kind")} | (set(map(str, many)) if isinstance(many, list) else set())
        if not mine & kinds:
            return False
    if events is not None:
        event = str(record.get("event"))
        if not any(event == e or event.startswith(e.rstrip(".*") + ".") for e in events):
            return False
    if revision is not None:
        rev = record.get("revision")
        if not isinstance(rev, str):
            return False
        if not (rev.startswith(revision) or rev.removeprefix("sha256:").startswith(revision)):
            return False
    return True


def read_records(
    paths: Iterable[Path],
    since: datetime | None = None,
    kinds: set[str] | None = None,
    events: set[str] | None = None,
    revision: str | None = None,
) -> Iterator[Record]:
    """Records of `paths` in order that pass every filter given; unreadable lines are skipped.

    `kinds` matches a record's `kind` (or any of a `kinds` list); `events` matches an event
    name exactly or a family (`pass` or `pass.*` matches every `pass.` event); `revision` is
    a prefix, with or without `sha256:`. Use `verify` to check the log, not this.
    """
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    for path in paths:
        try:
            stream = Path(path).open("rb")  # noqa: SIM115 -- the with below closes it
        except FileNotFoundError:
            continue
        with stream:
            for raw in stream:
                if not raw.endswith(b"\n"):
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and _matches(record, since, kinds, events, revision):
                    yield record


_CHAIN_KEYS = frozenset(REQUIRED_FIELDS)


def _clean(text: str) -> str:
    """One line, through the output boundary: hook output and file names come from outside,
    and the file itself may have been edited."""
    return scrub_line(text)


def _text(value: JsonValue) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _digest8(value: JsonValue) -> str:
    return f"{value[:8]}.." if isinstance(value, str) else "(none)"


def _error_text(error: JsonValue) -> str:
    if isinstance(error, dict):
        parts = [error.get("file"), error.get("field"), error.get("reason")]
        return ": ".join(_text(p) for p in parts if p is not None)
    return _text(error)


def _summary(record: Record) -> str:
    event = record.get("event")
    get = record.get
    if event in ("change.applied", "drift.corrected") and "path" in record:
        text = (
            f"{_text(get('kind'))} {_text(get('action'))} {_text(get('path'))} "
            f"{_digest8(get('before_sha256'))}->{_digest8(get('after_sha256'))}"
        )
        if get("subject") is not None:
            text += f" subject={_text(get('subject'))}"
        if get("not_after") is not None:
            text += f" not_after={_text(get('not_after'))}"
        return text
    if event == "hook.ran":
        return (
            f"{_text(get('hook'))} {_text(get('phase'))} exit={_text(get('exit_code'))} "
            f"{_text(get('duration_ms'))}ms"
        )
    if event == "pass.failed" and "reason" in record:
        return _text(get("reason"))
    errors = get("errors")
    if event == "state.rejected" and isinstance(errors, list):
        if not errors:
            return "(no errors listed)"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return _error_text(errors[0]) + more
    if event == "warning" and ("reason" in record or "message" in record):
        message = _text(get("reason") if "reason" in record else get("message"))
        where = [_text(v) for v in (get("file"), get("field")) if v is not None]
        return ": ".join([*where, message])
    return " ".join(f"{k}={_text(v)}" for k, v in record.items() if k not in _CHAIN_KEYS)


def _short_revision(revision: JsonValue) -> str:
    if not isinstance(revision, str):
        return "-"
    if revision.startswith("sha256:"):
        return revision[:19]
    return revision[:12]


def _short_ts(ts: JsonValue) -> str:
    moment = parse_ts(ts) if isinstance(ts, str) else None
    return rfc3339(moment) if moment else _text(ts)


def format_records(records: Iterable[Record]) -> str:
    """Aligned columns for people: TIME (UTC, seconds), SEQ, EVENT, REVISION, DETAILS.

    Returns an empty string when there are no records.
    """
    rows = [
        (
            _short_ts(r.get("ts")),
            _text(r.get("seq")),
            _text(r.get("event")),
            _short_revision(r.get("revision")),
            _summary(r),
        )
        for r in records
    ]
    if not rows:
        return ""
    header = ("TIME", "SEQ", "EVENT", "REVISION", "DETAILS")
    widths = [max(len(_clean(row[i])) for row in [header, *rows]) for i in range(4)]
    lines = []
    for ts, seq, event, revision, details in [header, *rows]:
        lines.append(
            f"{_clean(ts):<{widths[0]}}  {_clean(seq):>{widths[1]}}  {_clean(event):<{widths[2]}}"
            f"  {_clean(revision):<{widths[3]}}  {_clean(details)}".rstrip()
        )
    return "\n".join(lines) + "\n"


def verify_retained(files: Sequence[Path]) -> tuple[bool, str]:
    """`audit verify` with retention: (intact, the one line to print).

    logrotate deletes rotated files oldest first, so the chain is checked from the oldest file
    present: the line says from which seq, and whether that is the log's beginning (seq 1, a
    prev_hash of 64 zeros). Any break inside what remains is a broken log.
    """
    result = verify(files, allow_partial=True)
    if not result.ok:
        return False, f"audit log broken: {result.first_bad}"
    if not files or result.records == 0:
        return True, "audit log intact: no records yet"
    first = _first_record(files)
    start = first.get("seq") if first else None
    beginning = first is not None and start == 1 and first.get("prev_hash") == ZERO_HASH
    where = (
        "from seq 1, the log's beginning"
        if beginning
        else f"from seq {start}: older records are gone (rotated files deleted by retention), "
        "so this is not the log's beginning"
    )
    return True, f"audit log intact: {result.records} records in {len(files)} file(s), {where}"


def verify_witnessed(files: Sequence[Path], sources: Sequence[str]) -> tuple[bool, list[str]]:
    """`audit verify --witness`: (the log matches every checkable witnessed head, the lines to
    print). A source that holds no head is a failure: a recipe that selected nothing proves
    nothing."""
    witnessed = [item for source in sources for item in read_witnessed(source)]
    names = ", ".join("standard input" if source == "-" else source for source in sources)
    if not witnessed:
        return False, [
            f"witness {names}: no SEQ HASH line, so nothing to check the log against "
            "(does the recipe select this gateway's heads?)"
        ]
    report = check_witnessed(files, witnessed)
    summary = f"witnessed heads ({names}): {report.heads} checked, {report.matched} match"
    if report.not_checkable:
        summary += (
            f", {report.not_checkable} not checkable (older than seq {report.first_seq}, "
            "the oldest record left)"
        )
    failures = [f"audit log fails its witnesses: {failure}" for failure in report.failures]
    return report.ok, [summary, *failures]


def _first_record(files: Sequence[Path]) -> Record | None:
    for path in files:
        try:
            with path.open("rb") as stream:
                line = stream.readline()
        except OSError:
            return None
        if line.strip():
            value = json.loads(line)
            return value if isinstance(value, dict) else None
    return None
