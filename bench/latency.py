"""Latency and idle cost of `reconciler run`: swap-to-hook against a shell baseline, in-place edits.

Every latency is `hook's date +%s%N` minus `time.time_ns()` taken just before the event (the
`..data` rename, or the open of the in-place write). The hook is one script for both sides, so
its own start-up (sh, then date) counts equally in both. The daemon and the baseline watch two
separate sandboxes and take turns, so a noisy neighbour slows both alike.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench.harness import (
    REPO,
    BenchError,
    Report,
    cpu_seconds,
    figure,
    hook_times,
    progress,
    rss_mb,
    running_daemon,
    stop,
    wait_converged,
    wait_for,
    wait_idle,
)
from bench.pki import IdentityFiles, identities
from bench.workspace import Workspace, gateway_toml, profile_toml

SETTLE_S = 0.4
"""A daemon that used no CPU for this long (more than the quiet period) has finished reacting."""
SWAP_RATIO = 1.5
"""The swap-to-hook latency's target: at most this many times the shell baseline's."""
IDLE_RSS_MB = 45.0


def small_state(
    identity: IdentityFiles, trust_pem: bytes, policy: str = "intermediate"
) -> dict[str, bytes]:
    """The example's shape: an identity, HTTPS console, inbound STARTTLS, a CA, two profiles."""
    return {
        "gateway.toml": gateway_toml(policy),
        "tls/cert.pem": identity.cert_pem,
        "tls/key.pem": identity.key_pem,
        "trust/partner-ca.pem": trust_pem,
        "profiles/relay0.toml": profile_toml(0),
        "profiles/relay1.toml": profile_toml(1),
    }


def _next_hook(log: Path, before: int, started_ns: int, timeout_s: float = 30) -> float:
    """Milliseconds from `started_ns` to the first hook run after the `before`-th."""
    times: list[int] = wait_for(lambda: hook_times(log)[before:], timeout_s, f"a hook run in {log}")
    return (times[0] - started_ns) / 1e6


class Baseline:
    """The inotifywait + cp shell loop of bench/baseline.sh, on its own sandbox."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.stderr = ws.base / "baseline.err"
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    str(REPO / "bench" / "baseline.sh"),
                    str(ws.state),
                    str(ws.root),
                    str(ws.hook),
                    str(ws.hook_log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        wait_for(
            lambda: "Watches established" in self.stderr.read_text(), 10, "inotifywait's watches"
        )

    def stop(self) -> None:
        stop(self.proc)


def swap_latency(report: Report, reps: int, idle_s: float | None) -> None:
    """`..data` swaps that change the identity: daemon and baseline, turn about; then idle cost."""
    ids = identities(2)
    ca = ids[0].ca_pem
    daemon_ws = Workspace.create("swap")
    base_ws = Workspace.create("swap-baseline")
    try:
        daemon_ws.write_config()
        for ws in (daemon_ws, base_ws):
            ws.volume.publish(small_state(ids[0], ca))
        baseline = Baseline(base_ws)
        try:
            with running_daemon(daemon_ws.config, daemon_ws.base) as daemon:
                wait_converged(daemon, daemon_ws.var, 60)
                wait_for(lambda: hook_times(daemon_ws.hook_log), 30, "the first pass's hook")
                wait_idle(daemon.pid, SETTLE_S, 60)
                ours: list[float] = []
                theirs: list[float] = []
                for rep in range(reps):
                    identity = ids[(rep + 1) % 2]
                    for ws, sample in ((daemon_ws, ours), (base_ws, theirs)):
                        before = len(hook_times(ws.hook_log))
                        started, old = ws.volume.publish(small_state(identity, ca))
                        sample.append(_next_hook(ws.hook_log, before, started))
                        ws.volume.retire(old)
                        if ws is daemon_ws:
                            wait_idle(daemon.pid, SETTLE_S, 60)
                    progress(
                        f"swap {rep + 1}/{reps}: reconciler {ours[-1]:.1f} ms, "
                        f"baseline {theirs[-1]:.1f} ms"
                    )
                applied = (daemon_ws.root / "data" / "cert.pem").read_bytes()
                if applied != identity.cert_pem:
                    raise BenchError("the daemon's last swap did not leave the new identity")
                report.add(
                    figure(
                        "latency",
                        "..data swap -> hook start, identity change",
                        "ms",
                        ours,
                        baseline=theirs,
                        baseline_name="inotifywait + cp + cat shell loop",
                        at_most=SWAP_RATIO,
                    )
                )
                if idle_s:
                    idle(report, daemon.pid, idle_s)
        finally:
            baseline.stop()
    finally:
        daemon_ws.cleanup()
        base_ws.cleanup()


def idle(report: Report, pid: int, window_s: float) -> None:
    """CPU seconds per minute and RSS of a converged daemon left alone for `window_s`."""
    wait_idle(pid, SETTLE_S, 60)
    progress(f"idle: watching the converged daemon for {window_s:g} s")
    samples = []
    rss = []
    slices = 3
    for _ in range(slices):
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(window_s / slices)  # the measurement window itself: nothing to wait for
        samples.append((cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 60)
        rss.append(rss_mb(pid))
    report.add(
        figure(
            "idle",
            "CPU of a converged daemon",
            "CPU s/min",
            samples,
            at_most=0.05,
            note=f"utime+stime from /proc/PID/stat over {window_s:g} s in {slices} slices, "
            "clock-tick resolution (0.01 s)",
        )
    )
    report.add(
        figure(
            "idle",
            "RSS of a converged daemon (the example's state)",
            "MB",
            rss,
            at_most=IDLE_RSS_MB,
            note="VmRSS",
        )
    )


def idle_only(report: Report, window_s: float) -> None:
    """The idle figures on their own (`--only idle`)."""
    ids = identities(1)
    ws = Workspace.create("idle")
    try:
        ws.write_config()
        ws.volume.publish(small_state(ids[0], ids[0].ca_pem))
        with running_daemon(ws.config, ws.base) as daemon:
            wait_converged(daemon, ws.var, 60)
            idle(report, daemon.pid, window_s)
    finally:
        ws.cleanup()


def inplace_latency(report: Report, reps: int) -> None:
    """gateway.toml rewritten in place (a plain directory, not a volume): quiet period included."""
    ids = identities(1)
    ca = ids[0].ca_pem
    ws = Workspace.create("inplace")
    try:
        ws.write_config()
        files = small_state(ids[0], ca)
        for rel, data in files.items():
            (ws.state / rel).parent.mkdir(parents=True, exist_ok=True)
            (ws.state / rel).write_bytes(data)
        gateway = ws.state / "gateway.toml"
        with running_daemon(ws.config, ws.base) as daemon:
            wait_converged(daemon, ws.var, 60)
            wait_for(lambda: hook_times(ws.hook_log), 30, "the first pass's hook")
            wait_idle(daemon.pid, SETTLE_S, 60)
            sample = []
            for rep in range(reps):
                policy = "modern" if rep % 2 == 0 else "intermediate"
                before = len(hook_times(ws.hook_log))
                started = time.time_ns()
                with gateway.open("wb") as handle:  # truncate and write: an editor's plain save
                    handle.write(gateway_toml(policy))
                sample.append(_next_hook(ws.hook_log, before, started))
                wait_idle(daemon.pid, SETTLE_S, 60)
            conf = (ws.root / "nginx" / "ssl.conf").read_text()
            if f"{policy} policy" not in conf:
                raise BenchError(f"ssl.conf does not show the last policy {policy}")
        quiet = ws.quiet_period_ms
        made = figure(
            "latency", f"in-place edit -> hook start (quiet_period_ms={quiet})", "ms", sample
        )
        made.note = f"minus the quiet period: {made.stats.median - quiet:.1f} ms"
        report.add(made)
        report.facts["inplace_quiet_period_ms"] = quiet
    finally:
        ws.cleanup()
