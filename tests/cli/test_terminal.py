"""`apply` for a person at a terminal: the pass's steps on one line while it runs, then a summary by
kind instead of a log line per changed file; the audit log and JSON logs keep one record each."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

from tests.helpers import REPO
from tests.helpers.sandbox import Sandbox


def _on_a_terminal(sandbox: Sandbox, *args: str) -> tuple[int, str]:
    """`reconciler ARGS` with stdout and stderr on a pseudo-terminal; what the terminal got."""
    sandbox.write_config()
    leader, follower = pty.openpty()
    env = {
        **os.environ,
        "RECONCILER_CONFIG": str(sandbox.config),
        "RECONCILER_LOG_FORMAT": "console",
        "NO_COLOR": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=REPO,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_apply_on_a_terminal_shows_its_steps_then_a_summary_by_kind(sandbox: Sandbox) -> None:
    code, screen = _on_a_terminal(sandbox, "apply")
    assert code == 0, screen
    assert "\r\x1b[Kreconciler:   0.0 s  reading the desired state ..." in screen
    for step in ("reading the desired state", "validating", "staging 7 changes", "swapping"):
        assert step in screen, step
    assert "\r\x1b[K" in screen, "the progress line is cleared before the summary"
    lines = [line.strip("\r") for line in screen.splitlines()]
    summary = next(i for i, line in enumerate(lines) if ": applied 7 changes in " in line)
    assert lines[summary + 1 : summary + 6] == [
        "  identity     3 create",
        "  console      1 create",
        "  smtp_inbound 1 create",
        "  trust        1 create",
        "  profiles     1 create",
    ]
    assert "change.applied" not in screen
    # Other events are still logged, each on a line of its own: the progress line is cleared
    # before it and drawn again after it.
    assert re.search(r"\r\x1b\[K\S+Z \[info\s*\] pass\.started .*\n", screen), screen
    audit = [json.loads(line) for line in (sandbox.var / "audit.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "change.applied" for r in audit) == 7


def test_apply_off_a_terminal_logs_every_change(sandbox: Sandbox) -> None:
    done = sandbox.run("apply")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert sum(r["event"] == "change.applied" for r in records) == 7
    assert "\r" not in done.stderr


def test_nothing_to_do_on_a_terminal_is_one_line(sandbox: Sandbox) -> None:
    assert sandbox.run("apply").returncode == 0
    code, screen = _on_a_terminal(sandbox, "apply")
    assert code == 0
    final = screen.rsplit("\x1b[K", 1)[-1].strip()
    assert final.endswith("already converged; nothing changed"), screen
