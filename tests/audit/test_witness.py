"""Witnessed heads: the head of a log, witness files read strictly, a log checked against them."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pytest

from reconciler.audit.files import audit_files
from reconciler.audit.witness import (
    Head,
    Witnessed,
    check_witnessed,
    parse_heads,
    read_head,
    read_witnessed,
)
from reconciler.audit.writer import AuditLog
from reconciler.errors import AuditError
from tests.helpers.attacks import load, rechain, save

REV = "sha256:" + "ab" * 32


def write_log(path: Path, count: int, *, rotate_every: int = 0) -> list[Head]:
    """`count` records (renamed away every `rotate_every` records); the head after each."""
    heads = []
    with AuditLog(path) as log:
        for n in range(1, count + 1):
            record = log.append("pass.started", REV, kinds=["console"], changes=n)
            heads.append(Head(int(str(record["seq"])), str(record["hash"])))
            if rotate_every and n % rotate_every == 0 and n < count:
                path.rename(path.with_name(f"audit.jsonl.{n}"))
    return heads


def witnessed(*heads: Head, source: str = "heads.txt") -> list[Witnessed]:
    return [Witnessed(head, source, n) for n, head in enumerate(heads, start=1)]


def parse(text: bytes) -> list[Head]:
    return [item.head for item in parse_heads(io.BytesIO(text), "heads.txt")]


# --- the head ------------------------------------------------------------------------------------


def test_the_head_is_the_last_record_and_the_writer_counts_what_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    assert read_head(path) is None
    with AuditLog(path) as log:
        assert (log.head, log.appended) == (None, 0)
        log.append("pass.started", REV)
        log.append_many([("pass.succeeded", REV, {}), ("warning", None, {"reason": "x"})])
        last = json.loads(path.read_text().splitlines()[-1])
        assert log.head == Head(3, last["hash"])
        assert log.appended == 3
    assert read_head(path) == Head(3, last["hash"])
    with AuditLog(path) as again:
        assert (again.head, again.appended) == (Head(3, last["hash"]), 0)


def test_the_head_survives_a_rotation_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = write_log(path, 4)
    path.rename(tmp_path / "audit.jsonl.1")
    path.write_bytes(b"")
    assert read_head(path) == heads[-1]
    with (tmp_path / "audit.jsonl.1").open("ab") as rotated:
        rotated.write(b'{"seq": 5, "trunc')
    assert read_head(path) == heads[-1]
    assert (tmp_path / "audit.jsonl.1").read_bytes().endswith(b"trunc"), "reading wrote nothing"


# --- witness files -------------------------------------------------------------------------------


def test_heads_in_any_order_with_comments_blank_lines_and_repeats() -> None:
    a, b = "a" * 64, "B" * 64
    text = f"# heads of gw1\n\n7 {b}\n3 {a}   # the first\n  7 {b.lower()}\n\t12 {a}\n".encode()
    assert parse(text) == [Head(7, "b" * 64), Head(3, a), Head(7, "b" * 64), Head(12, a)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"7\n", "expected SEQ HASH, found 1 field(s)"),
        (b"7 " + b"a" * 64 + b" 2026-11-27\n", "found 3 field(s)"),
        (b"0 " + b"a" * 64 + b"\n", "seq '0' is not a positive integer"),
        (b"-3 " + b"a" * 64 + b"\n", "is not a positive integer"),
        (b"99999999999999999999 " + b"a" * 64 + b"\n", "is not a positive integer"),
        (b"7 " + b"g" * 64 + b"\n", "is not 64 hex digits"),
        (b"7 " + b"a" * 63 + b"\n", "is not 64 hex digits"),
        (b"7 \xff" + b"a" * 63 + b"\n", "not UTF-8 text"),
        (b"7 " + b"a" * 5000 + b"\n", "longer than 4096 bytes"),
    ],
    ids=[
        "one-field",
        "three-fields",
        "seq-0",
        "negative",
        "huge",
        "not-hex",
        "short",
        "binary",
        "long",
    ],
)
def test_a_line_that_is_no_head_names_the_source_line_and_reason(line: bytes, reason: str) -> None:
    good = b"1 " + b"c" * 64 + b"\n"
    with pytest.raises(AuditError) as caught:
        parse(good + line)
    assert str(caught.value).startswith("witness heads.txt line 2: ")
    assert reason in str(caught.value)


def test_witness_sources_a_file_a_pipe_and_what_is_refused(tmp_path: Path) -> None:
    line = f"4 {'d' * 64}\n"
    heads = tmp_path / "heads.txt"
    heads.write_text(line)
    assert [w.head for w in read_witnessed(str(heads))] == [Head(4, "d" * 64)]
    assert read_witnessed(str(heads))[0].where == f"{heads} line 1"
    # A pipe, as `--witness <(jq ...)` gives one.
    reader, writer = os.pipe()
    feeder = threading.Thread(target=lambda: (os.write(writer, line.encode()), os.close(writer)))
    feeder.start()
    assert [w.head for w in read_witnessed(f"/dev/fd/{reader}")] == [Head(4, "d" * 64)]
    feeder.join()
    os.close(reader)
    for bad, reason in (
        (tmp_path / "missing.txt", "cannot read: No such file or directory"),
        (tmp_path, "not a regular file or a pipe"),
        (Path("/dev/zero"), "not a regular file or a pipe"),
    ):
        with pytest.raises(AuditError, match=f"witness {bad}: {reason}"):
            read_witnessed(str(bad))


# --- checking ------------------------------------------------------------------------------------


def test_a_log_matches_the_heads_it_published(tmp_path: Path) -> None:
    heads = write_log(tmp_path / "audit.jsonl", 9, rotate_every=3)
    files = audit_files(tmp_path / "audit.jsonl")
    assert len(files) == 3
    report = check_witnessed(files, witnessed(heads[8], heads[1], heads[4], heads[4]))
    assert report.ok
    assert (report.heads, report.matched, report.not_checkable) == (3, 3, 0)
    assert (report.first_seq, report.last_seq) == (1, 9)


def test_a_cut_log_is_truncated_at_the_first_witnessed_seq_beyond_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = write_log(path, 8)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:5]))
    report = check_witnessed([path], witnessed(heads[2], heads[6], heads[7]))
    assert not report.ok
    assert [str(f) for f in report.failures] == [
        "truncated: witnessed seq 7 (heads.txt line 2), log ends at 5 (the highest witnessed is 8)"
    ]
    path.write_text("")
    (failure,) = check_witnessed([path], witnessed(heads[2])).failures
    assert str(failure) == "truncated: witnessed seq 3 (heads.txt line 1), the log holds no record"


def test_a_rewritten_and_rechained_log_names_the_first_witnessed_seq_that_differs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    heads = write_log(path, 10)
    log = load([path])
    log[0][1][5]["changes"] = 99  # record 6
    rechain(log)
    save(log)
    report = check_witnessed([path], witnessed(heads[2], heads[4], heads[7], heads[9]))
    (failure,) = report.failures
    assert (failure.kind, failure.seq) == ("rewritten", 8)
    assert str(failure).startswith(
        f"rewritten: record 8 differs from its witness ({heads[7].hash[:12]}.. in heads.txt "
        "line 3; the log has "
    )
    assert str(failure).endswith("; the log matches its witnesses up to seq 5")
    assert report.matched == 2


def test_a_replaced_log_matches_no_witnessed_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = write_log(path, 6)
    path.unlink()
    write_log(path, 6)  # a fresh chain: other times, so other hashes
    (failure,) = check_witnessed([path], witnessed(heads[1], heads[5])).failures
    assert (failure.kind, failure.seq) == ("rewritten", 2)
    assert "no witnessed record matches: the log was replaced, or rewritten from its start" in str(
        failure
    )


def test_two_chains_among_the_witnessed_heads_are_a_fork(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = write_log(path, 6)
    path.unlink()
    new = write_log(path, 9)
    # The writer went on with the replacement and published its heads too.
    (failure,) = check_witnessed([path], witnessed(old[2], old[5], new[7])).failures
    assert (failure.kind, failure.seq) == ("forked", 3)
    assert "but record 8, witnessed later, matches" in str(failure)
    # One seq, two hashes: two witnesses saw two chains, whatever the log says.
    both = witnessed(new[3]) + witnessed(old[3], source="other.txt")
    (failure,) = check_witnessed([path], both).failures
    assert str(failure) == (
        f"forked: seq 4 was witnessed with two hashes ({new[3].hash[:12]}.. in heads.txt line 1, "
        f"{old[3].hash[:12]}.. in other.txt line 1): the witnesses saw two chains"
    )


def test_heads_older_than_what_retention_left_are_not_checkable(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = write_log(path, 9, rotate_every=3)
    files = audit_files(path)
    files[0].unlink()
    report = check_witnessed(files[1:], witnessed(heads[0], heads[2], heads[5], heads[8]))
    assert report.ok
    assert (report.matched, report.not_checkable, report.first_seq) == (2, 2, 4)


def test_a_record_missing_inside_the_log_differs_from_its_witness(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    heads = write_log(path, 5)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[3:]))
    (failure,) = check_witnessed([path], witnessed(heads[2], heads[4])).failures
    assert (failure.kind, failure.seq) == ("rewritten", 3)
    assert "the log has no such record" in str(failure)


def test_no_heads_is_no_proof(tmp_path: Path) -> None:
    write_log(tmp_path / "audit.jsonl", 2)
    assert not check_witnessed([tmp_path / "audit.jsonl"], []).ok
