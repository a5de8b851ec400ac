"""A real `reconciler run` child process for tests: start it, read its log and audit, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import REPO
from tests.helpers.sandbox import Sandbox
from tests.helpers.waiting import wait_for as _wait

QUIET = "quiet_period_ms = 100\nmax_wait_ms = 1000\n"


def wait_for(
    condition: Callable[[], Any], what: str, daemon: Daemon | None = None, timeout: float = 20
) -> Any:
    """`tests.helpers.waiting.wait_for`, showing the daemon's log tail on a timeout."""
    detail = (lambda: daemon.log_text()[-3000:]) if daemon else None
    return _wait(condition, what, timeout, detail)


@dataclass
class Daemon:
    """One `reconciler run` child process and what it left behind."""

    box: Sandbox
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self, event: str | None = None, **match: object) -> list[dict[str, Any]]:
        found = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if event is not None and record.get("event") != event:
                continue
            if all(record.get(key) == value for key, value in match.items()):
                found.append(record)
        return found

    def passes(self, **match: object) -> list[dict[str, Any]]:
        return self.log_events("pass.finished", **match)

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        path = self.box.var / "audit.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [r for r in records if event is None or r["event"] == event]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)

    def wait_started(self) -> None:
        wait_for(lambda: self.passes(trigger="start"), "the first pass", self)

    def idle_after(self, count: int) -> bool:
        """Whether `count` passes have finished and the daemon is idle: the last of them found
        nothing to do, or the events of its own writes were seen and dismissed without a pass
        (`events.own_writes`)."""
        passes = 0
        settled = False
        for record in self.log_events():
            if record.get("event") == "pass.finished":
                passes += 1
                settled = record.get("outcome") == "no-change"
            elif record.get("event") == "events.own_writes":
                settled = True
        return passes >= count and settled

    def wait_idle_after(self, count: int) -> None:
        """Wait until `idle_after(count)`."""
        wait_for(lambda: self.idle_after(count), f"idle after {count} pass(es)", self)


class DaemonStarter:
    """Starts daemons on one sandbox (quiet period 100 ms); kills any still running at the end."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.started: list[Daemon] = []

    def __call__(self, env: dict[str, str] | None = None, *, wait: bool = True) -> Daemon:
        sandbox = self.sandbox
        sandbox.extra = QUIET + sandbox.extra if QUIET not in sandbox.extra else sandbox.extra
        config = sandbox.write_config()
        log_path = sandbox.base / f"daemon-{len(self.started)}.log"
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))
        }
        full_env = {**inherited, **sandbox.env, **(env or {}), "RECONCILER_CONFIG": str(config)}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run"],
                env=full_env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        daemon = Daemon(sandbox, process, log_path)
        self.started.append(daemon)
        if wait:
            daemon.wait_started()
        return daemon

    def kill_all(self) -> None:
        for daemon in self.started:
            if daemon.alive():
                daemon.process.kill()
                daemon.process.wait()
