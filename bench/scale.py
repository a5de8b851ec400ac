"""Scale: 1,000 and 5,000 trust entries (10,000 on request) with a fifth as many profiles.

Per size: the cold first pass (`reconciler apply` on an empty ROOT), then a daemon on the
converged ROOT: the swap-to-hook latency of a one-entry change (one trust entry's certificate
replaced) and of a one-profile change, then its RSS once idle. The trust store is the `directory`
backend with its own refresh (no `trust_refresh` setting), as an operator would run it: whatever
that refresh costs is part of every figure that changes a trust entry.
"""

from __future__ import annotations

import statistics
import time

from bench.harness import (
    PYTHON,
    BenchError,
    Daemon,
    Report,
    figure,
    hook_times,
    progress,
    rss_mb,
    running_daemon,
    timed_run,
    wait_converged,
    wait_for,
    wait_idle,
)
from bench.latency import SETTLE_S
from bench.pki import IdentityFiles, identities, trust_pems
from bench.workspace import Workspace, gateway_toml, profile_toml

SPARE = 50
POOL = 10_000 + SPARE
"""One cached pool serves every size: the first N certificates, then spares for the changes."""
GATED = 5000
"""The size the targets are set for."""
COLD_S = 5.0
ONE_CHANGE_MS = 100.0
RSS_MB = 60.0


def scale_state(
    count: int, pems: list[bytes], identity_cert: bytes, key: bytes
) -> dict[str, bytes]:
    files = {
        "gateway.toml": gateway_toml(),
        "tls/cert.pem": identity_cert,
        "tls/key.pem": key,
    }
    for number in range(count):
        files[f"trust/ca-{number:05d}.pem"] = pems[number]
    for number in range(count // 5):
        files[f"profiles/p{number:05d}.toml"] = profile_toml(number)
    return files


def scale(report: Report, sizes: list[int], cold_reps: int, change_reps: int) -> dict[int, float]:
    """Every size in turn; the cold pass is repeated fewer times as it grows (bounded runtime).
    Returns the median one-trust-entry change latency by size."""
    progress(f"scale: loading or generating {POOL} trust certificates (cached)")
    started = time.perf_counter()
    pems = trust_pems(POOL)
    progress(f"scale: {len(pems)} certificates ready in {time.perf_counter() - started:.1f} s")
    ids = identities(1)
    growth: dict[int, float] = {}
    for count in sizes:
        reps = max(1, cold_reps - sizes.index(count))
        growth[count] = _one_size(report, count, pems, ids[0], reps, change_reps)
    return growth


def _one_size(
    report: Report,
    count: int,
    pems: list[bytes],
    identity: IdentityFiles,
    cold_reps: int,
    change_reps: int,
) -> float:
    ws = Workspace.create(f"scale{count}")
    gated = count == GATED
    label = f"{count} entries + {count // 5} profiles"
    try:
        ws.write_config()
        files = scale_state(count, pems, identity.cert_pem, identity.key_pem)
        ws.volume.publish(files)
        apply = [PYTHON, "-m", "reconciler", "apply"]
        cold = []
        for rep in range(cold_reps):
            ws.reset_targets()
            wall, _, code = timed_run(apply, ws.env())
            if code != 0:
                raise BenchError(f"cold `reconciler apply` with {count} entries exited {code}")
            cold.append(wall)
            progress(f"scale {count}: cold apply {rep + 1}/{cold_reps}: {wall:.2f} s")
        installed = len(list(ws.trust_dir.glob("reconciler-*.crt")))
        if installed != count:
            raise BenchError(f"{installed} trust entries installed, {count} wanted")
        report.add(
            figure(
                "scale",
                f"{label}: cold first pass (`reconciler apply`, empty ROOT)",
                "s",
                cold,
                at_most=COLD_S if gated else None,
                note="the old ROOT is moved aside before each run and deleted after the run",
            )
        )
        with running_daemon(ws.config, ws.base) as daemon:
            first = wait_converged(daemon, ws.var, 300)
            wait_idle(daemon.pid, SETTLE_S, 120)
            progress(f"scale {count}: daemon converged {first:.2f} s after start")
            trust: list[float] = []
            profile: list[float] = []
            for rep in range(change_reps):
                files = dict(files)
                files[f"trust/ca-{rep % count:05d}.pem"] = pems[10_000 + rep % SPARE]
                trust.append(_one_change(ws, daemon, files))
                files = dict(files)
                files[f"profiles/p{rep % (count // 5):05d}.toml"] = profile_toml(rep, 10_000 + rep)
                profile.append(_one_change(ws, daemon, files))
                progress(
                    f"scale {count}: change {rep + 1}/{change_reps}: trust entry "
                    f"{trust[-1]:.0f} ms, profile {profile[-1]:.0f} ms"
                )
            wait_idle(daemon.pid, SETTLE_S, 120)
            rss = [rss_mb(daemon.pid)]
            for _ in range(2):
                time.sleep(0.5)  # samples of an idle process: nothing to wait for
                rss.append(rss_mb(daemon.pid))
            peak = _hwm_mb(daemon.pid)
        report.add(
            figure(
                "scale",
                f"{label}: one trust entry changed, swap -> hook start",
                "ms",
                trust,
                at_most=ONE_CHANGE_MS if gated else None,
                note="the directory backend's own refresh (no trust_refresh setting)",
            )
        )
        report.add(
            figure(
                "scale",
                f"{label}: one profile changed, swap -> hook start",
                "ms",
                profile,
                at_most=ONE_CHANGE_MS if gated else None,
            )
        )
        report.add(
            figure(
                "scale",
                f"{label}: RSS of the idle daemon after the changes",
                "MB",
                rss,
                at_most=RSS_MB if gated else None,
                note=f"VmRSS; peak (VmHWM) {peak:.0f} MB",
            )
        )
        return statistics.median(trust)
    finally:
        ws.cleanup()


def _one_change(ws: Workspace, daemon: Daemon, files: dict[str, bytes]) -> float:
    """Publish `files` (one file differs) and return ms from the `..data` swap to the hook."""
    before = len(hook_times(ws.hook_log))
    started, old = ws.volume.publish(files)
    times: list[int] = wait_for(lambda: hook_times(ws.hook_log)[before:], 120, "a hook run")
    ws.volume.retire(old)
    wait_idle(daemon.pid, SETTLE_S, 120)
    return (times[0] - started) / 1e6


def _hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0
