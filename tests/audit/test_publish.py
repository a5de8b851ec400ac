"""Publishing heads: the log event, the observer, a real witness command, and its failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from reconciler.audit.publish import HeadPublisher
from reconciler.audit.witness import Head
from tests.helpers.waiting import wait_for

A, B, C = (Head(n, ch * 64) for n, ch in ((3, "a"), (7, "b"), (9, "c")))


@pytest.fixture
def logs() -> Iterator[list[dict[str, object]]]:
    with capture_logs() as captured:
        yield captured


def events(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == name]


def appender(path: Path) -> list[str]:
    """A witness that appends what it reads to `path`: the simplest witness file."""
    return ["/bin/sh", "-c", 'cat >> "$0"', str(path)]


def test_a_head_is_logged_observed_and_given_to_the_witness_on_stdin(
    tmp_path: Path, logs: list[dict[str, object]]
) -> None:
    witnessed = tmp_path / "heads.txt"
    seen: list[Head] = []
    publisher = HeadPublisher(appender(witnessed), 5, on_head=seen.append)
    publisher.publish(A)
    publisher.publish(B)
    assert witnessed.read_text() == f"3 {'a' * 64}\n7 {'b' * 64}\n"
    assert seen == [A, B]
    assert [(e["seq"], e["hash"]) for e in events(logs, "audit.head")] == [(3, A.hash), (7, B.hash)]
    assert events(logs, "audit.witness_failed") == []


def test_without_a_witness_the_head_is_still_logged_and_observed(
    logs: list[dict[str, object]],
) -> None:
    seen: list[Head] = []
    publisher = HeadPublisher(None, on_head=seen.append)
    publisher.publish(A)
    publisher.submit(B)
    publisher.close()
    assert seen == [A, B]
    assert len(events(logs, "audit.head")) == 2


def test_each_distinct_failure_is_counted_always_and_reported_once(
    tmp_path: Path, logs: list[dict[str, object]]
) -> None:
    status = tmp_path / "exit-status"
    status.write_text("3")
    witness = ["/bin/sh", "-c", 'cat > /dev/null; echo "store unavailable"; exit $(cat "$0")']
    failures: list[None] = []
    # A generous bound: on a loaded machine a 5 s one can fire first and change the reason.
    publisher = HeadPublisher([*witness, str(status)], 60, on_failure=lambda: failures.append(None))
    publisher.publish(A)
    publisher.publish(B)
    status.write_text("4")
    publisher.publish(C)
    assert len(failures) == 3
    reported = [e for e in events(logs, "audit.witness_failed") if e["log_level"] == "warning"]
    assert [(e["seq"], e["reason"]) for e in reported] == [(3, "exited 3"), (9, "exited 4")]
    assert reported[0]["output_tail"] == "store unavailable\n"
    assert reported[0]["retry"] == "with the next head"
    assert [e["seq"] for e in events(logs, "audit.witness_failed")] == [3, 7, 9]
    status.write_text("0")
    publisher.publish(C)
    (recovered,) = events(logs, "audit.witness_recovered")
    assert (recovered["seq"], recovered["after"]) == (9, "exited 4")
    status.write_text("3")
    publisher.publish(C)
    assert len(failures) == 4
    assert (
        len([e for e in events(logs, "audit.witness_failed") if e["log_level"] == "warning"]) == 3
    )


def test_a_missing_witness_program_is_a_failure_not_an_error(
    tmp_path: Path, logs: list[dict[str, object]]
) -> None:
    failures: list[None] = []
    publisher = HeadPublisher(
        [str(tmp_path / "no-such-witness")], 5, on_failure=lambda: failures.append(None)
    )
    publisher.publish(A)
    (failed,) = events(logs, "audit.witness_failed")
    assert str(failed["reason"]).startswith(f"could not start {tmp_path / 'no-such-witness'}")
    assert failures == [None]


def test_a_hanging_witness_is_killed_with_its_process_group_at_the_timeout(
    tmp_path: Path, logs: list[dict[str, object]]
) -> None:
    pids = tmp_path / "pids"
    # The witness and a child of its own: both must be gone when publish returns.
    hang = ["/bin/sh", "-c", 'sleep 300 & echo "$$ $!" > "$0"; wait', str(pids)]
    publisher = HeadPublisher(hang, 0.5)
    publisher.publish(A)
    (failed,) = events(logs, "audit.witness_failed")
    assert failed["reason"] == "timed out after 0.5 s; its process group was killed"
    for pid in map(int, pids.read_text().split()):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_submit_never_waits_and_the_newest_head_is_witnessed_next(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    witnessed = tmp_path / "heads.txt"
    # Holds until the gate is removed, then appends what it read.
    slow = [
        "/bin/sh",
        "-c",
        'head=$(cat); while [ -e "$0" ]; do sleep 0.02; done; echo "$head" >> "$1"',
        str(gate),
        str(witnessed),
    ]
    seen: list[Head] = []
    publisher = HeadPublisher(slow, 30, on_head=seen.append)
    publisher.submit(A)
    # A is being witnessed (the gate holds it); these two wait, and only the newest is kept.
    wait_for(lambda: _witness_running(gate), "the witness of the first head")
    publisher.submit(B)
    publisher.submit(C)
    assert seen == [A, B, C], "announced at once, however long the witness takes"
    assert not witnessed.exists()
    gate.unlink()
    wait_for(lambda: witnessed.exists() and len(witnessed.read_text().splitlines()) == 2, "2 runs")
    publisher.close()
    assert witnessed.read_text() == A.line() + C.line()


def test_close_witnesses_the_last_head_submitted(tmp_path: Path) -> None:
    witnessed = tmp_path / "heads.txt"
    publisher = HeadPublisher(appender(witnessed), 5)
    publisher.submit(A)
    publisher.submit(B)
    publisher.close()
    assert witnessed.read_text().splitlines()[-1] == B.line().strip()
    publisher.submit(C)  # after close: announced, not witnessed
    assert C.line() not in witnessed.read_text()


def test_configure_changes_the_witness_for_the_next_head(tmp_path: Path) -> None:
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    publisher = HeadPublisher(appender(first), 5)
    publisher.publish(A)
    publisher.configure(appender(second), 5)
    publisher.publish(B)
    publisher.configure(None, 5)
    publisher.publish(C)
    assert (first.read_text(), second.read_text()) == (A.line(), B.line())


def _witness_running(gate: Path) -> bool:
    return any(
        str(gate) in " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and p.info["cmdline"][0] == "/bin/sh"
    )
