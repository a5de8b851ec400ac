"""The audit log: an fsynced hash chain that survives restarts, rotation, crashes and tampering."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.audit.files import audit_files
from reconciler.audit.record import EVENTS, ZERO_HASH, JsonValue, Record
from reconciler.audit.verifier import verify
from reconciler.audit.writer import AuditLog
from reconciler.cli.auditview import format_records, parse_since, read_records
from reconciler.core.desired import CertInfo, Finding, Identity
from reconciler.core.secret import SecretBytes
from reconciler.errors import AuditError
from reconciler.support import devpki

REV = "0123456789abcdef0123456789abcdef01234567"
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def spec_hash(prev_hash: str, record: dict[str, object]) -> str:
    """The documented chain rule, written again so the test does not trust the module's code."""
    without = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(without, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def lines_of(paths: list[Path]) -> list[tuple[Path, int, dict[str, object]]]:
    out = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            out.append((path, n, json.loads(line)))
    return out


def write_records(path: Path, records: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")


def cert_info() -> CertInfo:
    return CertInfo(
        subject="CN=gw.example.com",
        issuer="CN=Example CA",
        serial="0x1f",
        not_before=datetime(2026, 11, 1, tzinfo=UTC),
        not_after=datetime(2027, 2, 25, tzinfo=UTC),
        sha256_fingerprint="ab" * 32,
        is_ca=False,
        self_signed=False,
    )


def fixed_clock(start: datetime, step: timedelta = timedelta(seconds=1)) -> Callable[[], datetime]:
    moments = iter(start + step * i for i in range(1_000_000))
    return lambda: next(moments)


@pytest.fixture
def history(tmp_path: Path) -> list[Path]:
    """A log written by three processes' worth of AuditLog instances, with one rotation."""
    path = tmp_path / "var" / "audit.jsonl"
    with AuditLog(path) as first:
        first.append("pass.started", REV)
        info = cert_info()
        first.append(
            "change.applied", REV, kind="identity", path=Path("/root/data/cert.pem"),
            action="update", before_sha256="a" * 64, after_sha256="b" * 64, subject=info.subject,
            issuer=info.issuer, serial=info.serial, not_after=info.not_after,
            sha256_fingerprint=info.sha256_fingerprint,
        )  # fmt: skip
        first.append("pass.succeeded", REV, changes=1)
    with AuditLog(path) as second:
        second.append("pass.started", "sha256:" + "c" * 64)
        second.append(
            "hook.ran", REV, hook="reload-console", phase="apply", exit_code=0, duration_ms=42,
            output_tail="nginx: configuration file test is successful\n",
        )  # fmt: skip
        path.rename(path.with_name("audit-20261127T171314Z.jsonl"))  # rotated from outside
        second.append("pass.failed", REV, reason="verification failed: wrong leaf presented")
    with AuditLog(path) as third:
        third.append("pass.started", REV)
        finding = Finding("error", "gateway.toml", "console.https", "needs [identity]")
        third.append("state.rejected", REV, errors=[finding, "profiles/x.toml: url: bad scheme"])
        third.append("warning", REV, reason="leaf expires in 12 days", file="tls/cert.pem")
    return audit_files(path)


# --- the chain ---------------------------------------------------------------------------------


def test_chain_recomputed_from_the_spec_formula_across_restarts_and_rotation(
    history: list[Path],
) -> None:
    assert [p.name for p in history][-1] == "audit.jsonl"
    assert len(history) == 2
    assert re.fullmatch(r"audit-\d{8}T\d{6}Z\.jsonl", history[0].name)
    prev = ZERO_HASH
    records = lines_of(history)
    for index, (_, _, record) in enumerate(records, start=1):
        assert list(record)[:5] == ["ts", "seq", "event", "revision", "prev_hash"]
        assert list(record)[-1] == "hash"
        assert TS.fullmatch(str(record["ts"]))
        assert record["seq"] == index
        assert record["event"] in EVENTS
        assert record["prev_hash"] == prev
        assert record["hash"] == spec_hash(prev, record)
        prev = str(record["hash"])
    assert len(records) == 9
    # The new file's first record links to the old file's last one.
    first_of_new = next(r for p, n, r in records if p == history[1] and n == 1)
    assert first_of_new["seq"] == 6
    result = verify(history)
    assert result.ok, result.first_bad
    assert (result.records, result.last_seq, result.last_hash) == (9, 9, prev)


def test_values_are_converted_to_json(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.jsonl") as log:
        record = log.append(
            "change.applied", REV, when=datetime(2027, 2, 25, 12, 0, tzinfo=UTC),
            local=datetime(2027, 2, 25, 13, 30, 0, 5, tzinfo=UTC) + timedelta(hours=0),
            path=Path("/a/b"), pair=(1, "x"), tags=frozenset({"b", "a"}), cert=cert_info(),
        )  # fmt: skip
    assert record["when"] == "2027-02-25T12:00:00Z"
    assert record["local"] == "2027-02-25T13:30:00.000005Z"
    assert record["path"] == "/a/b"
    assert record["pair"] == [1, "x"]
    assert record["tags"] == ["a", "b"]
    cert = record["cert"]
    assert isinstance(cert, dict)
    assert cert["not_after"] == "2027-02-25T00:00:00Z"
    assert cert["subject"] == "CN=gw.example.com"
    assert cert["is_ca"] is False
    line = (tmp_path / "audit.jsonl").read_text()
    assert json.loads(line) == record


# --- tampering ---------------------------------------------------------------------------------


def _edited(value: JsonValue) -> JsonValue:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        # Keep shapes valid (a digit for a digit, hex for hex) so only the chain can tell.
        end = len(value) - 1 if value.endswith("Z") else len(value)
        digit = "0" if value[end - 1 : end] != "0" else "1"
        return value[: end - 1] + digit + value[end:]
    if value is None:
        return "x"
    if isinstance(value, list):
        return [*value, "x"]
    return {"x": 1}


def _tamper_copy(
    history: list[Path], root: Path, change: Callable[[list[list[Record]]], None]
) -> list[Path]:
    contents = [[json.loads(line) for line in p.read_text().splitlines()] for p in history]
    change(contents)
    root.mkdir()
    copies = [root / p.name for p in history]
    for copy, records in zip(copies, contents, strict=True):
        write_records(copy, records)
    return copies


def test_editing_any_field_of_any_record_names_that_record(
    history: list[Path], tmp_path: Path
) -> None:
    cases = 0
    for file_index, path in enumerate(history):
        for line_index, record in enumerate(json.loads(x) for x in path.read_text().splitlines()):
            for key in record:

                def edit(contents: list[list[Record]], f: int = file_index, i: int = line_index,
                         k: str = key) -> None:  # fmt: skip
                    contents[f][i][k] = _edited(contents[f][i][k])

                copies = _tamper_copy(history, tmp_path / f"edit-{cases}", edit)
                result = verify(copies)
                assert not result.ok, f"editing {key} of {path.name}:{line_index + 1} went unseen"
                assert result.first_bad is not None
                assert result.first_bad.file == copies[file_index]
                assert result.first_bad.line_no == line_index + 1
                assert "hash mismatch: the record was edited" in result.first_bad.reason
                cases += 1
    assert cases > 60


def test_deleting_a_record_names_the_gap(history: list[Path], tmp_path: Path) -> None:
    everything = lines_of(history)
    # The newest record cannot be told from a shorter log; the daemon's shrink warning covers it.
    for index in range(len(everything) - 1):
        path, line_no, record = everything[index]
        f = history.index(path)

        def delete(contents: list[list[Record]], f: int = f, i: int = line_no - 1) -> None:
            del contents[f][i]

        copies = _tamper_copy(history, tmp_path / f"del-{index}", delete)
        result = verify(copies)
        assert not result.ok
        bad = result.first_bad
        assert bad is not None
        seq = record["seq"]
        assert bad.seq == int(str(seq)) + 1, bad
        if seq == 1:
            assert "prev_hash is not 64 zeros" in bad.reason
        else:
            assert f"seq jumps from {int(str(seq)) - 1} to {int(str(seq)) + 1}" in bad.reason
            assert f"record {seq} was deleted" in bad.reason
        # Named where the next record now sits.
        nxt_path, nxt_line, _ = everything[index + 1]
        expected_line = nxt_line - 1 if nxt_path == path else nxt_line
        assert (bad.file.name, bad.line_no) == (nxt_path.name, expected_line)


def test_reordering_two_records_names_the_first_moved(history: list[Path], tmp_path: Path) -> None:
    for f, path in enumerate(history):
        count = len(path.read_text().splitlines())
        for i in range(count - 1):

            def swap(contents: list[list[Record]], f: int = f, i: int = i) -> None:
                contents[f][i], contents[f][i + 1] = contents[f][i + 1], contents[f][i]

            copies = _tamper_copy(history, tmp_path / f"swap-{f}-{i}", swap)
            result = verify(copies)
            assert not result.ok
            assert result.first_bad is not None
            assert (result.first_bad.file, result.first_bad.line_no) == (copies[f], i + 1)


def test_prev_hash_rewired_after_a_deletion_is_named(tmp_path: Path) -> None:
    """Deleting a record and renumbering seq still breaks the prev_hash link."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for _ in range(5):
            log.append("pass.started", REV)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    del records[2]
    prev = records[1]["hash"]
    for record in records[2:]:
        record["seq"] -= 1
        record["hash"] = spec_hash(record["prev_hash"], record)
    write_records(path, records)
    bad = verify([path]).first_bad
    assert bad is not None
    assert bad.line_no == 3
    assert bad.reason.startswith("prev_hash does not match record 2's hash")
    assert prev != records[2]["prev_hash"]
    assert str(bad).startswith(f"record 3 (line 3 of {path}): prev_hash does not match")


def test_a_truncated_last_line_is_reported(history: list[Path]) -> None:
    current = history[-1]
    data = current.read_bytes()
    current.write_bytes(data[:-20])
    result = verify(history)
    assert not result.ok
    bad = result.first_bad
    assert bad is not None
    assert (bad.file, bad.line_no) == (current, 4)
    assert bad.reason.startswith("torn last line (no trailing newline)")
    assert result.records == 8


def test_files_out_of_order_and_partial_logs(history: list[Path]) -> None:
    swapped = verify(list(reversed(history)))
    assert not swapped.ok
    assert swapped.first_bad is not None
    assert swapped.first_bad.file == history[1]
    assert "prev_hash is not 64 zeros" in swapped.first_bad.reason
    assert not verify(history[1:]).ok
    assert verify(history[1:], allow_partial=True).ok
    missing = verify([history[0], history[0]])
    assert missing.first_bad is not None
    assert "seq goes from 5 back to 1" in missing.first_bad.reason


def test_garbage_lines_and_missing_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("pass.started", REV)
    good = path.read_text()
    for text, reason in [
        ("not json\n", "not valid JSON"),
        ("[1, 2]\n", "not a JSON object"),
        ('{"seq": 2}\n', "missing field(s) ts, event, revision, prev_hash, hash"),
        ("\xff\n", "not UTF-8"),
    ]:
        path.write_bytes(good.encode() + text.encode("latin-1"))
        bad = verify([path]).first_bad
        assert bad is not None
        assert bad.line_no == 2
        assert reason in bad.reason
    assert verify([tmp_path / "absent.jsonl"]).first_bad is not None


# --- continuity --------------------------------------------------------------------------------


def test_seq_continues_after_an_external_rename_while_open(tmp_path: Path) -> None:
    """logrotate's default mode: the file is renamed under a running daemon."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("pass.started", REV)
    log.append("pass.succeeded", REV)
    path.rename(tmp_path / "audit.jsonl.1")
    third = log.append("pass.started", REV)
    assert third["seq"] == 3
    assert path.exists()
    log.close()
    files = audit_files(path)
    assert [p.name for p in files] == ["audit.jsonl.1", "audit.jsonl"]
    assert verify(files).ok
    # And a restart after a rename with nothing written since continues from the rotated file.
    path.rename(tmp_path / "audit.jsonl-20261127")
    with AuditLog(path) as restarted:
        assert restarted.append("pass.started", REV)["seq"] == 4
    files = audit_files(path)
    assert [p.name for p in files] == ["audit.jsonl.1", "audit.jsonl-20261127", "audit.jsonl"]
    assert verify(files).ok


def test_append_is_on_disk_and_complete_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "new" / "audit.jsonl"
    with AuditLog(path) as log:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o037 == 0, oct(mode)
        for n in range(1, 21):
            record = log.append("pass.started", REV, n=n)
            with path.open("rb") as other:
                data = other.read()
            assert data.endswith(b"\n")
            lines = data.splitlines()
            assert len(lines) == n
            assert json.loads(lines[-1]) == record


def test_open_fails_with_an_audit_error_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match=r"audit log .*file/audit\.jsonl: cannot open"):
        AuditLog(blocker / "audit.jsonl")


def test_a_log_that_shrinks_under_the_daemon_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for _ in range(3):
            log.append("pass.started", REV)
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:2]))  # someone removes the newest record
        log.append("pass.succeeded", REV)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"] for r in records] == ["pass.started"] * 2 + ["warning", "pass.succeeded"]
    assert "shrank" in records[2]["reason"]
    assert records[2]["seq"] == 4
    bad = verify([path]).first_bad
    assert bad is not None
    assert bad.line_no == 3
    assert "seq jumps from 2 to 4: record 3 was deleted" in bad.reason


# --- torn tail ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        pytest.param(b'{"ts":"2026-11-27T17:13:14.1', "no trailing newline", id="no-newline"),
        pytest.param(b"\x00\x00\x00\n", "not a valid audit record", id="invalid-line"),
    ],
)
def test_a_torn_last_record_is_moved_aside_and_recorded(
    tmp_path: Path, tail: bytes, why: str
) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("pass.started", REV)
        log.append("pass.started", REV)
    intact = path.read_bytes()
    path.write_bytes(intact + tail)  # a crash mid-write
    before = verify([path])
    assert not before.ok
    assert before.first_bad is not None
    assert before.first_bad.line_no == 3

    with AuditLog(path) as log:
        warning = log.append("pass.started", REV)
    torn = list(tmp_path.glob("audit.jsonl.torn-*"))
    assert len(torn) == 1
    assert torn[0].read_bytes() == tail
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.read_bytes().startswith(intact)
    assert records[2]["event"] == "warning"
    assert records[2]["seq"] == 3
    assert records[2]["torn_bytes"] == len(tail)
    assert records[2]["torn_offset"] == len(intact)
    assert records[2]["torn_file"] == str(torn[0])
    assert records[2]["torn_sha256"] == hashlib.sha256(tail).hexdigest()
    assert why in records[2]["reason"]
    assert warning["seq"] == 4
    assert verify([path]).ok
    assert audit_files(path) == [path]  # the torn file is no part of the chain


def test_a_file_that_is_only_a_torn_record_continues_from_the_rotated_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("pass.started", REV)
        path.rename(path.with_name("audit.jsonl.1"))
    path.write_bytes(b'{"ts":')
    with AuditLog(path) as log:
        log.append("pass.started", REV)
    assert verify(audit_files(path)).ok
    assert verify(audit_files(path)).records == 3


def test_damage_deeper_than_the_last_line_stops_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("pass.started", REV)
    good = path.read_bytes()
    path.write_bytes(good + b"garbage\n" + b'{"ts":')
    with pytest.raises(AuditError, match=rf"audit log {re.escape(str(path))}: the record at byte "):
        AuditLog(path)


def test_a_large_log_is_reopened_from_its_tail(tmp_path: Path) -> None:
    """The tail is found by reading backwards; lines longer than a read chunk still work."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for _ in range(3):
            log.append("hook.ran", REV, output_tail="x" * 100_000)
    with AuditLog(path) as log:
        assert log.last_seq == 3
        assert log.append("pass.started", REV)["seq"] == 4
    assert verify([path]).ok


# --- secrets and bad input ---------------------------------------------------------------------


def test_key_material_is_redacted_and_non_json_is_refused(tmp_path: Path) -> None:
    issued = devpki.issue(devpki.make_ca(), "gw.example.com")
    pem = issued.key_pem
    identity = Identity(
        cert_pem=issued.cert_pem, key_pem=SecretBytes(pem), leaf=cert_info(), chain=()
    )
    path = tmp_path / "audit.jsonl"
    refused: list[tuple[dict[str, object], str]] = [
        ({"when": datetime(2026, 1, 1)}, "without a timezone"),
        ({"obj": object()}, "object is not JSON-serialisable"),
        ({"nan": float("nan")}, "JSON cannot represent"),
    ]
    with AuditLog(path) as log:
        for fields, match in refused:
            with pytest.raises(TypeError, match=match):
                log.append("warning", REV, **fields)
        with pytest.raises(ValueError, match=r"'pass\.start' is not one of pass\.started"):
            log.append("pass.start", REV)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="seq are set by the audit log itself"):
            log.append("warning", REV, seq=3)
        assert path.read_bytes() == b""
        record = log.append(
            "warning",
            REV,
            key=SecretBytes(pem),
            nested={"deep": [SecretBytes(pem)]},
            identity=identity,
            raw=pem,
            text="before " + pem.decode().lower() + " after",
        )
    assert record["key"] == "[private key redacted]"
    assert record["nested"] == {"deep": ["[private key redacted]"]}
    assert record["raw"] == f"<{len(pem)} bytes withheld>"
    assert record["text"] == "before [private key redacted]\n after"
    body = [line for line in pem.decode().splitlines() if "-----" not in line]
    assert body
    assert not any(line in path.read_text() for line in body)
    assert verify([path]).ok


def test_only_the_spec_events_exist() -> None:
    assert EVENTS == (
        "pass.started", "change.applied", "pass.succeeded", "pass.failed", "state.rejected",
        "warning", "hook.ran", "rollback.completed", "drift.corrected", "recovery.completed",
    )  # fmt: skip


# --- concurrency -------------------------------------------------------------------------------


def test_concurrent_appends_from_threads_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    barrier = threading.Barrier(6)
    with AuditLog(path) as log, AuditLog(path) as other:

        def worker(n: int) -> None:
            barrier.wait()
            for i in range(40):
                (log if n % 2 else other).append("pass.started", REV, worker=n, i=i)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result = verify([path])
    assert result.ok, result.first_bad
    assert result.records == 240
    assert [r["seq"] for r in read_records([path])] == list(range(1, 241))


def test_another_process_appending_keeps_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from reconciler.audit.writer import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "for i in range(100):\n"
        "    log.append('warning', None, reason='from the CLI', i=i)\n"
    )
    with AuditLog(path) as log:
        log.append("pass.started", REV)
        with subprocess.Popen(
            [sys.executable, "-c", script, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        ) as child:  # fmt: skip
            assert child.stdout is not None
            assert child.stdin is not None
            assert child.stdout.readline() == "ready\n"
            child.stdin.write("go\n")
            child.stdin.flush()
            for i in range(100):
                log.append("pass.succeeded", REV, i=i)
            assert child.wait(timeout=60) == 0
        log.append("pass.started", REV)
    result = verify([path])
    assert result.ok, result.first_bad
    assert result.records == 202


# --- the operator's view -----------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 17, 13, 14, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("1h30m", NOW - timedelta(minutes=90)),
        (" 2h ", NOW - timedelta(hours=2)),
        ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
        ("2026-11-27T17:13:14Z", NOW),
        ("2026-11-27T18:13:14+01:00", NOW),
        ("2026-11-27T17:13:14", NOW),
        ("2026-11-27 17:13", NOW.replace(second=0)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_parse_since(text: str, expected: datetime) -> None:
    result = parse_since(text, NOW)
    assert result == expected
    assert result.tzinfo is not None
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "2h ago", "-5m", "5y", "2026-13-01", "h"])
def test_parse_since_rejects_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"^'.*': not an ISO 8601 date or time .*duration"):
        parse_since(text, NOW)


def test_parse_since_refuses_a_duration_beyond_the_calendar() -> None:
    with pytest.raises(ValueError, match="too far back"):
        parse_since("999999999d", NOW)


@pytest.fixture
def shown(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=fixed_clock(NOW, timedelta(minutes=30))) as log:
        log.append("pass.started", REV)
        log.append(
            "change.applied", REV, kind="identity", action="update", path="/gw/data/cert.pem",
            before_sha256="1a2b3c4d" + "0" * 56, after_sha256="5e6f7a8b" + "0" * 56,
            subject="CN=gw.example.com", not_after=datetime(2027, 2, 25, tzinfo=UTC),
        )  # fmt: skip
        log.append(
            "change.applied", REV, kind="console", action="create", path="/gw/nginx/ssl.conf",
            before_sha256=None, after_sha256="9" * 64,
        )  # fmt: skip
        log.append(
            "hook.ran", REV, hook="reload-console", phase="apply", exit_code=0, duration_ms=42,
            output_tail="ok\n",
        )  # fmt: skip
        log.append("pass.succeeded", REV)
        digest = "sha256:" + "d" * 64
        log.append(
            "state.rejected", digest,
            errors=[Finding("error", "gateway.toml", "console.https", "needs [identity]"),
                    "profiles/a.toml: url: bad"],
        )  # fmt: skip
        log.append("pass.failed", digest, reason="hook reload-console exited 1\x1b[31m")
        log.append("warning", None, reason="leaf expires in 12 days", file="tls/cert.pem")
        log.append("recovery.completed", REV, outcome="completed", kinds=["identity"])
    return path


def test_format_records_reads_like_a_table(shown: Path) -> None:
    text = format_records(read_records([shown]))
    d = "sha256:dddddddddddd"
    assert text == (
        "TIME                  SEQ  EVENT               REVISION             DETAILS\n"
        "2026-11-27T17:13:14Z    1  pass.started        0123456789ab\n"
        "2026-11-27T17:43:14Z    2  change.applied      0123456789ab         identity update "
        "/gw/data/cert.pem 1a2b3c4d..->5e6f7a8b.. subject=CN=gw.example.com "
        "not_after=2027-02-25T00:00:00Z\n"
        "2026-11-27T18:13:14Z    3  change.applied      0123456789ab         console create "
        "/gw/nginx/ssl.conf (none)->99999999..\n"
        "2026-11-27T18:43:14Z    4  hook.ran            0123456789ab         reload-console "
        "apply exit=0 42ms\n"
        "2026-11-27T19:13:14Z    5  pass.succeeded      0123456789ab\n"
        f"2026-11-27T19:43:14Z    6  state.rejected      {d}  gateway.toml: console.https: "
        "needs [identity] (+1 more)\n"
        f"2026-11-27T20:13:14Z    7  pass.failed         {d}  hook reload-console exited "
        "1\\x1b[31m\n"
        "2026-11-27T20:43:14Z    8  warning             -                    tls/cert.pem: "
        "leaf expires in 12 days\n"
        "2026-11-27T21:13:14Z    9  recovery.completed  0123456789ab         outcome=completed "
        'kinds=["identity"]\n'
    )
    assert format_records([]) == ""


def test_read_records_filters(shown: Path) -> None:
    def seqs(**filters: object) -> list[object]:
        return [r["seq"] for r in read_records([shown], **filters)]  # type: ignore[arg-type]

    assert seqs() == list(range(1, 10))
    assert seqs(since=NOW + timedelta(hours=2)) == [5, 6, 7, 8, 9]
    assert seqs(since=parse_since("2026-11-27T20:00:00Z", NOW)) == [7, 8, 9]
    assert seqs(kinds={"identity"}) == [2, 9]
    assert seqs(kinds={"console", "trust"}) == [3]
    assert seqs(events={"pass"}) == [1, 5, 7]
    assert seqs(events={"pass.*", "warning"}) == [1, 5, 7, 8]
    assert seqs(events={"hook.ran"}) == [4]
    assert seqs(revision="0123456789ab") == [1, 2, 3, 4, 5, 9]
    assert seqs(revision="dddd") == [6, 7]
    assert seqs(revision="sha256:dd") == [6, 7]
    assert seqs(events={"change.applied"}, kinds={"console"}, revision="0123") == [3]
    # A torn tail and garbage are skipped: show is for reading, verify is for checking.
    with shown.open("ab") as stream:
        stream.write(b'garbage\n{"ts":')
    assert seqs() == list(range(1, 10))


def _records(path: Path) -> Iterator[Record]:
    return read_records([path])


def test_read_records_skips_missing_files(tmp_path: Path) -> None:
    assert list(_records(tmp_path / "absent.jsonl")) == []
    assert audit_files(tmp_path / "nowhere" / "audit.jsonl") == []


def test_append_many_chains_through_the_batch_and_continues_after_it(tmp_path: Path) -> None:
    """A batch is the same chain as one-by-one appends: seq +1 each, prev_hash linked, verified."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("pass.started", "r1")
        batch = log.append_many(
            [("change.applied", "r1", {"kind": "trust", "path": f"/t/{n}.crt"}) for n in range(4)]
        )
        log.append("pass.succeeded", "r1")
    assert [r["seq"] for r in batch] == [2, 3, 4, 5]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4, 5, 6]
    for before, after in itertools.pairwise(lines):
        assert after["prev_hash"] == before["hash"]
    assert verify([path]).ok


def test_records_appended_unsynced_are_in_the_file_and_sync_makes_them_durable(
    tmp_path: Path,
) -> None:
    """A pass writes its records without an fsync of their own and makes them durable in the
    same batch as the journal: they are in the file at once, the chain as usual, and a failing
    fsync is an AuditError naming the records it could not make durable."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("pass.started", "r1")
        written = log.append_many([("change.applied", "r1", {"kind": "trust"})], sync=False)
        assert json.loads(path.read_text().splitlines()[-1]) == written[0]
        log.sync()
        log.sync()  # nothing left to make durable: a no-op
        log.append_many([("pass.succeeded", "r1", {})], sync=False)
        kept = os.dup(log._fd)
        reader, writer = os.pipe()
        os.dup2(writer, log._fd)  # a descriptor fsync refuses (EINVAL)
        with pytest.raises(AuditError, match=r"cannot make records 3 to 3 durable"):
            log.sync()
        os.dup2(kept, log._fd)
        for fd in (kept, reader, writer):
            os.close(fd)
    assert verify([path]).ok


def test_append_many_refuses_the_whole_batch_if_one_record_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log, pytest.raises(TypeError):
        log.append_many(
            [("warning", None, {"reason": "fine"}), ("warning", None, {"x": float("inf")})]
        )
    assert not path.exists() or path.read_text() == ""
