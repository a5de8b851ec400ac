"""The cost of publishing the audit head: passes with a witness command against passes without.

Two sandboxes, the same desired state and hook, two daemons: one publishes each head to a witness
command (the documented simplest one: `sh -c 'cat >> FILE'`), the other has none. Each round
rewrites `gateway.toml` in place on both, one after the other (which one goes first alternates),
and waits until that daemon is done (hook run, pass reported, head witnessed, CPU quiet). Then
`reconciler apply` of one change, on each side in turn. Measured, with the side without a witness
as the baseline of the same run:

* the pass's own duration (`pass.finished`'s `duration_ms`): the daemon witnesses on a thread of
  its own, after the pass;
* edit -> hook start, the latency users see (the quiet period included);
* CPU per pass: the daemon's utime+stime and its reaped children's (the hook, the witness), from
  the edit until it is quiet again: what publishing costs the machine;
* `reconciler apply` wall time: `apply` waits for its witness before it exits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.harness import (
    CLK_TCK,
    BenchError,
    Figure,
    Report,
    Stats,
    hook_times,
    progress,
    read_lines,
    running_daemon,
    timed_run,
    wait_converged,
    wait_for,
    wait_idle,
)
from bench.latency import SETTLE_S, small_state
from bench.pki import identities
from bench.startup import reconciler_command
from bench.workspace import Workspace, gateway_toml


def cpu_with_children(pid: int) -> float:
    """utime + stime of a process and of its children it waited for, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15]) / CLK_TCK


def pass_durations(log: Path) -> list[int]:
    """`duration_ms` of every `pass.finished` the daemon logged."""
    found = []
    for line in read_lines(log):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "pass.finished":
            found.append(int(record["duration_ms"]))
    return found


def last_head(audit: Path) -> str:
    """`SEQ HASH` of the log's last record, as the witness receives it."""
    record = json.loads(read_lines(audit)[-1])
    return f"{record['seq']} {record['hash']}"


class Side:
    """One sandbox and what was measured on it."""

    def __init__(self, tag: str, witnessed: bool) -> None:
        self.ws = Workspace.create(tag)
        self.witness_log = self.ws.base / "witness.log" if witnessed else None
        if self.witness_log is not None:
            self.ws.extra = f'[audit]\nwitness = ["/bin/sh", "-c", "cat >> {self.witness_log}"]\n'
        self.durations: list[float] = []
        self.latencies: list[float] = []
        self.cpu_ms: list[float] = []
        self.apply_s: list[float] = []

    def prepare(self, files: dict[str, bytes]) -> None:
        self.ws.write_config()
        for rel, data in files.items():
            (self.ws.state / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.ws.state / rel).write_bytes(data)

    def witnessed(self) -> bool:
        """The log's head has reached the witness (always, without one)."""
        if self.witness_log is None:
            return True
        return last_head(self.ws.audit) in read_lines(self.witness_log)

    def one_pass(self, pid: int, log: Path, policy: str) -> None:
        hooks, passes = len(hook_times(self.ws.hook_log)), len(pass_durations(log))
        cpu = cpu_with_children(pid)
        started = time.time_ns()
        with (self.ws.state / "gateway.toml").open("wb") as handle:
            handle.write(gateway_toml(policy))
        times = wait_for(lambda: hook_times(self.ws.hook_log)[hooks:], 30, "the hook")
        self.latencies.append((times[0] - started) / 1e6)
        durations = wait_for(lambda: pass_durations(log)[passes:], 30, "the pass's report")
        self.durations.append(durations[0])
        wait_for(self.witnessed, 30, "the head witnessed")
        wait_idle(pid, SETTLE_S, 60)
        self.cpu_ms.append((cpu_with_children(pid) - cpu) * 1000)

    def apply(self, policy: str) -> None:
        (self.ws.state / "gateway.toml").write_bytes(gateway_toml(policy))
        wall, _, code = timed_run([*reconciler_command(), "apply"], self.ws.env())
        if code != 0:
            raise BenchError(f"`reconciler apply` in {self.ws.base} exited {code}")
        self.apply_s.append(wall)
        if not self.witnessed():
            raise BenchError("`reconciler apply` exited before its head was witnessed")


def witness(report: Report, reps: int) -> None:
    identity = identities(1)[0]
    files = small_state(identity, identity.ca_pem)
    on, off = Side("witness-on", witnessed=True), Side("witness-off", witnessed=False)
    try:
        for side in (on, off):
            side.prepare(files)
        with (
            running_daemon(on.ws.config, on.ws.base) as on_daemon,
            running_daemon(off.ws.config, off.ws.base) as off_daemon,
        ):
            daemons = {id(on): on_daemon, id(off): off_daemon}
            for side in (on, off):
                wait_converged(daemons[id(side)], side.ws.var, 60)
                wait_for(side.witnessed, 30, "the first head witnessed")
                wait_idle(daemons[id(side)].pid, SETTLE_S, 60)
            for rep in range(reps):
                policy = "modern" if rep % 2 == 0 else "intermediate"
                for side in (on, off) if rep % 2 == 0 else (off, on):
                    daemon = daemons[id(side)]
                    side.one_pass(daemon.pid, daemon.log, policy)
                progress(
                    f"witness {rep + 1}/{reps}: pass {on.durations[-1]:.0f} ms with, "
                    f"{off.durations[-1]:.0f} ms without; CPU {on.cpu_ms[-1]:.0f} / "
                    f"{off.cpu_ms[-1]:.0f} ms"
                )
        for rep in range(reps):
            policy = "old" if rep % 2 == 0 else "intermediate"
            for side in (on, off) if rep % 2 == 0 else (off, on):
                side.apply(policy)
        assert on.witness_log is not None
        report.facts["witness_heads_witnessed"] = len(read_lines(on.witness_log))
        _figures(report, on, off)
    finally:
        on.ws.cleanup()
        off.ws.cleanup()


def _figures(report: Report, on: Side, off: Side) -> None:
    witness = "witness: sh -c 'cat >> FILE'"
    rows = (
        ("daemon pass (pass.finished duration_ms)", "ms", on.durations, off.durations, witness),
        ("in-place edit -> hook start", "ms", on.latencies, off.latencies, witness),
        (
            "CPU per pass, daemon and its children",
            "CPU ms",
            on.cpu_ms,
            off.cpu_ms,
            f"{witness}; utime+stime+cutime+cstime, clock-tick resolution (10 ms)",
        ),
        ("`reconciler apply` of one change, wall", "s", on.apply_s, off.apply_s, witness),
    )
    for name, unit, with_witness, without, note in rows:
        report.add(
            Figure(
                "witness",
                f"{name}, with a witness command",
                unit,
                Stats.of(with_witness),
                Stats.of(without),
                "the same without a witness, turn about",
                note=note,
            )
        )
    # The mean over every pass sees through the clock tick that one pass's figure cannot.
    report.facts["witness_cpu_ms_per_pass_mean"] = {
        "with": round(sum(on.cpu_ms) / len(on.cpu_ms), 1),
        "without": round(sum(off.cpu_ms) / len(off.cpu_ms), 1),
    }
