"""With `log_format = "json"`, every line the process writes to stdout or stderr is one JSON object.

A journal or log shipper reads the daemon's output line by line; one free-text line (a Python
warning, a library's own log record, a traceback) breaks that promise. These tests run the real
daemon and `apply` through the odd paths (keys of refused types, a rejected push, a hook writing
to stderr) and parse every line; and they make the process emit a warning, a standard-library log
record and uncaught exceptions, which must come out as JSON too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from reconciler.support import devpki
from tests.helpers import REPO
from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parsed as a JSON object; fails naming the first line that is not one."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), f"line {number} is not a JSON object: {line!r}"
        records.append(record)
    return records


STDERR_HOOK = """
[[hooks]]
name = "noisy"
on = ["identity", "trust", "profiles", "console", "smtp_inbound"]
run = ["sh", "-c", "echo 'a line on stderr' >&2; echo 'and one on stdout'"]
timeout_s = 10
"""


def test_daemon_and_apply_write_only_json_lines(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    sandbox.hooks = STDERR_HOOK
    daemon = start_daemon()
    passes = len(daemon.passes())

    # A DSA key and an Ed25519 key: refused by type (cryptography warns on touching DSA).
    dsa_leaf = devpki.issue(pki.intermediate, key_type="dsa2048")
    sandbox.state.identity(pki, dsa_leaf)
    wait_for(lambda: len(daemon.audit("state.rejected")) >= 1, "the DSA key rejected", daemon)
    ed_leaf = devpki.issue(pki.intermediate, key=ed25519.Ed25519PrivateKey.generate())
    sandbox.state.identity(pki, ed_leaf)
    wait_for(lambda: len(daemon.audit("state.rejected")) >= 2, "the Ed25519 key rejected", daemon)
    # A good identity again: a pass that applies and runs the hook that writes to stderr.
    sandbox.state.identity(pki, pki.leaf2)
    wait_for(
        lambda: any(p["outcome"] == "converged" for p in daemon.passes()[passes:]),
        "the new identity applied",
        daemon,
    )
    assert daemon.stop() == 0

    records = json_lines(daemon.log_text())
    events = {r["event"] for r in records}
    assert {"state.rejected", "hook.ran", "pass.finished", "daemon.stopped"} <= events, events
    rejected = " ".join(json.dumps(r) for r in records if r["event"] == "state.rejected")
    assert "DSA keys are not allowed" in rejected
    assert "Ed25519 keys are not allowed" in rejected
    assert all("level" in r and "timestamp" in r for r in records)

    # `apply` on the refused key: its stdout and stderr are JSON lines too.
    sandbox.state.identity(pki, dsa_leaf)
    applied = sandbox.run("apply")
    assert applied.returncode == 1, applied.stderr
    assert json_lines(applied.stderr)
    json_lines(applied.stdout)


ROUTED = """
import logging, sys, threading, warnings
from reconciler.support.logging import configure_logging

configure_logging("json")
warnings.warn_explicit("old API", DeprecationWarning, "somelib/api.py", 7, module="somelib")
logging.getLogger("somelib.transport").warning("retrying %s", "host")
logging.getLogger("somelib").error("failed", exc_info=ValueError("boom"))
thread = threading.Thread(target=lambda: 1 / 0, name="worker")
thread.start()
thread.join()
raise RuntimeError("at the top")
"""


def test_warnings_library_records_and_uncaught_exceptions_are_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", ROUTED],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    records = json_lines(done.stderr)
    by_event = {r["event"]: r for r in records}
    warning = by_event["python.warning"]
    assert warning["category"] == "DeprecationWarning"
    assert warning["message"] == "old API"
    assert warning["source"] == "somelib/api.py:7"
    assert by_event["retrying host"]["logger"] == "somelib.transport"
    assert by_event["retrying host"]["level"] == "warning"
    assert "ValueError: boom" in by_event["failed"]["exception"]
    uncaught = [r for r in records if r["event"] == "uncaught.exception"]
    assert [r.get("thread") for r in uncaught] == ["worker", None]
    assert "ZeroDivisionError" in uncaught[0]["exception"]
    assert "RuntimeError: at the top" in uncaught[1]["exception"]
