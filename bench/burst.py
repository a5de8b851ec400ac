"""Burst: 300 in-place writes to one profile as fast as possible; how many passes and hook runs."""

from __future__ import annotations

import json
import time

from bench.harness import (
    BenchError,
    Report,
    figure,
    hook_times,
    progress,
    read_lines,
    running_daemon,
    wait_converged,
    wait_for,
    wait_idle,
)
from bench.latency import SETTLE_S, small_state
from bench.pki import identities
from bench.workspace import Workspace, profile_toml

WRITES = 300
FIRST_PORT = 10000


def _events(audit_lines: list[str], event: str) -> int:
    return sum(1 for line in audit_lines if f'"event":"{event}"' in line.replace(" ", ""))


def burst(report: Report, reps: int) -> None:
    ids = identities(1)
    ws = Workspace.create("burst")
    hook_runs: list[float] = []
    passes: list[float] = []
    settle: list[float] = []
    try:
        ws.write_config()
        for rel, data in small_state(ids[0], ids[0].ca_pem).items():
            (ws.state / rel).parent.mkdir(parents=True, exist_ok=True)
            (ws.state / rel).write_bytes(data)
        profile = ws.state / "profiles" / "relay0.toml"
        profiles_json = ws.root / "data" / "server-profiles.json"
        with running_daemon(ws.config, ws.base) as daemon:
            wait_converged(daemon, ws.var, 60)
            wait_for(lambda: hook_times(ws.hook_log), 30, "the first pass's hook")
            wait_idle(daemon.pid, SETTLE_S, 60)
            for rep in range(reps):
                hooks_before = len(hook_times(ws.hook_log))
                audit_before = len(read_lines(ws.audit))
                last_port = FIRST_PORT + (rep + 1) * WRITES
                for port in range(last_port - WRITES + 1, last_port + 1):
                    with profile.open("wb") as handle:
                        handle.write(profile_toml(0, port))
                written = time.perf_counter()

                def final_applied(want: int = last_port) -> bool:
                    try:
                        data = json.loads(profiles_json.read_bytes())
                    except (OSError, ValueError):
                        return False
                    return any(p["port"] == want for p in data["profiles"])

                wait_for(final_applied, 60, f"port {last_port} in {profiles_json}")
                settle.append(time.perf_counter() - written)
                wait_idle(daemon.pid, 1.5, 60)  # longer than max_wait_ms: no pass still pending
                runs = len(hook_times(ws.hook_log)) - hooks_before
                audit = read_lines(ws.audit)[audit_before:]
                hook_runs.append(runs)
                passes.append(_events(audit, "pass.started"))
                progress(
                    f"burst {rep + 1}/{reps}: {WRITES} writes -> {passes[-1]} applying passes, "
                    f"{runs} hook runs"
                )
                if runs == 0:
                    raise BenchError("the burst's final state was applied without a hook run")
    finally:
        ws.cleanup()
    report.add(
        figure(
            "burst",
            f"{WRITES} rapid in-place writes: hook runs",
            "runs",
            hook_runs,
            at_most=5,
            of="max",
        )
    )
    report.add(
        figure(
            "burst", f"{WRITES} rapid in-place writes: passes that changed files", "passes", passes
        )
    )
    report.add(
        figure(
            "burst",
            "last write -> final state in place",
            "s",
            settle,
            note=f"quiet_period_ms={ws.quiet_period_ms}, max_wait_ms={ws.max_wait_ms}",
        )
    )
