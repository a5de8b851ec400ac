"""Bounded commands: what they read on stdin, and that a command which does not read it is fine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.support.process import run_bounded


def test_stdin_is_the_bytes_given_or_nothing() -> None:
    given = run_bounded(["/bin/sh", "-c", "cat; echo end"], env={}, timeout_s=10, stdin=b"7 ab\n")
    assert (given.exit_code, given.output_tail) == (0, "7 ab\nend\n")
    nothing = run_bounded(["/bin/sh", "-c", "cat; echo end"], env={}, timeout_s=10)
    assert (nothing.exit_code, nothing.output_tail) == (0, "end\n")


def test_a_command_that_never_reads_its_stdin_is_not_held_by_it() -> None:
    large = b"x" * (1 << 20)  # more than a pipe holds: written to a file, not a pipe
    done = run_bounded(["/bin/sh", "-c", "exit 3"], env={}, timeout_s=10, stdin=large)
    assert (done.exit_code, done.error) == (3, None)


def test_started_is_called_once_while_the_command_runs(tmp_path: Path) -> None:
    """The command waits on a FIFO that only `started` writes to: it can finish only if
    `started` ran after it was spawned and before run_bounded waited for its exit."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    calls: list[int] = []

    def started() -> None:
        calls.append(1)
        with fifo.open("w") as go:  # blocks until the command opens the FIFO to read
            go.write("go\n")

    done = run_bounded(
        ["/bin/sh", "-c", 'read word < "$0"; echo "$word"', str(fifo)],
        env={},
        timeout_s=30,
        started=started,
    )
    assert (done.exit_code, done.output_tail, calls) == (0, "go\n", [1])


def test_started_is_called_when_the_command_cannot_start() -> None:
    calls: list[int] = []
    done = run_bounded(
        ["/nonexistent/command"], env={}, timeout_s=10, started=lambda: calls.append(1)
    )
    assert done.exit_code is None
    assert done.error is not None
    assert calls == [1]


def test_a_failing_started_is_raised_once_the_command_ended(tmp_path: Path) -> None:
    """What `started` raises never leaves the command running unwaited."""
    done_file = tmp_path / "done"

    def started() -> None:
        raise RuntimeError("the log could not be written")

    with pytest.raises(RuntimeError, match="the log could not be written"):
        run_bounded(
            ["/bin/sh", "-c", f"exec 0<&-; touch '{done_file}'"],
            env={},
            timeout_s=30,
            started=started,
        )
    assert done_file.exists()  # it ran to its end before the error came back
