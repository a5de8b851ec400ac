"""Scale: 1,000 / 5,000 / 10,000 trust entries with a fifth as many profiles.

Per size: the cold first pass (`reconciler apply` on an empty ROOT), then a daemon on the
converged ROOT: its RSS, and the swap-to-hook latency of a one-entry change (one trust entry's
certificate replaced). The trust refresh is bench/rehash.py (incremental links, no certificate
parsing) so that the OS tool's cost (`openssl rehash`: seconds at this size) is not what is
measured; the trust store's own check that every changed entry is in the store still runs.
"""

from __future__ import annotations

import shutil
import time

from bench.harness import (
    PYTHON,
    BenchError,
    Figure,
    Report,
    Stats,
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
    """Every size in turn; the cold pass is repeated fewer times as it grows (bounded runtime)."""
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
        target = "<= 10 s" if count == 5000 else None
        cold_stats = Stats.of(cold)
        report.add(
            Figure(
                "scale",
                f"{count} entries: cold first pass (`reconciler apply`, empty ROOT)",
                "s",
                cold_stats,
                target=target,
                met=cold_stats.median <= 10 if target else None,
            )
        )
        with running_daemon(ws.config, ws.base) as daemon:
            first = wait_converged(daemon, ws.var, 300)
            wait_idle(daemon.pid, SETTLE_S, 120)
            progress(f"scale {count}: daemon converged {first:.2f} s after start")
            latencies = []
            for rep in range(change_reps):
                changed = dict(files)
                changed[f"trust/ca-{rep % count:05d}.pem"] = pems[10_000 + rep % SPARE]
                files = changed
                before = len(hook_times(ws.hook_log))
                started, old = ws.volume.publish(files)
                times: list[int] = wait_for(
                    lambda b=before: hook_times(ws.hook_log)[b:],  # type: ignore[misc]
                    120,
                    "a hook run",
                )
                latencies.append((times[0] - started) / 1e6)
                if old is not None:
                    shutil.rmtree(old)
                wait_idle(daemon.pid, SETTLE_S, 120)
                progress(
                    f"scale {count}: one change {rep + 1}/{change_reps}: {latencies[-1]:.0f} ms"
                )
            rss = rss_mb(daemon.pid)
            peak = _hwm_mb(daemon.pid)
        target = "<= 250 ms" if count == 5000 else None
        stats = Stats.of(latencies)
        report.add(
            Figure(
                "scale",
                f"{count} entries: one trust entry changed, swap -> hook start",
                "ms",
                stats,
                target=target,
                met=stats.median <= 250 if target else None,
            )
        )
        target = "<= 150 MB" if count == 5000 else None
        report.add(
            Figure(
                "scale",
                f"{count} entries: daemon RSS after the changes",
                "MB",
                Stats.of([rss]),
                target=target,
                met=rss <= 150 if target else None,
                note=f"peak (VmHWM) {peak:.0f} MB",
            )
        )
        return stats.median
    finally:
        ws.cleanup()


def _hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0
