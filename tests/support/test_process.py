"""Bounded commands: what they read on stdin, and that a command which does not read it is fine."""

from __future__ import annotations

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
