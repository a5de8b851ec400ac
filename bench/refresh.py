"""The operating system's trust refresh tools, timed for a one-entry change at 100, 1,000, 5,000.

What the debian backend runs after a pass changed a trust entry (`update-ca-certificates`, on
temporary directories: its own `openssl rehash` of the certificates directory, the bundle of
every CA), and what the directory backend ran before it made its links itself (`openssl rehash
DIR`). Neither is the reconciler's own work: these are the share of a trust change that an
operator's choice of backend adds. The reconciler's in-process links are part of the scale
bench's one-trust-entry change.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import TRASH, BenchError, Report, figure, progress
from bench.pki import trust_pems

PREFIX = "reconciler-"


def refresh(report: Report, sizes: list[int], reps: int) -> None:
    """Each tool after a one-entry change (the entry replaced by a new file), per size."""
    missing = [tool for tool in ("openssl", "update-ca-certificates") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"not installed: {', '.join(missing)}")
    pems = trust_pems(max(sizes) + reps + 1)
    for count in sizes:
        base = Path(tempfile.mkdtemp(prefix=f"reconciler-bench-refresh{count}-"))
        try:
            # update-ca-certificates takes half a minute at 5,000 entries: fewer runs there.
            _one_size(report, base, count, pems, reps if count < 5000 else min(reps, 2))
        finally:
            TRASH.discard(base)


def _one_size(report: Report, base: Path, count: int, pems: list[bytes], reps: int) -> None:
    capath = base / "capath"
    share, local, etc, hooks = (base / name for name in ("share", "local", "etc", "hooks"))
    for directory in (capath, share, local, etc, hooks):
        directory.mkdir()
    for number in range(count):
        name = f"{PREFIX}ca-{number:05d}.crt"
        (capath / name).write_bytes(pems[number])
        (local / name).write_bytes(pems[number])
    (share / "distribution-root.crt").write_bytes(pems[-1])
    conf = base / "ca-certificates.conf"
    conf.write_text("distribution-root.crt\n")
    update = [
        "update-ca-certificates",
        "--certsconf", str(conf),
        "--certsdir", str(share),
        "--localcertsdir", str(local),
        "--etccertsdir", str(etc),
        "--hooksdir", str(hooks),
    ]  # fmt: skip
    rehash = ["openssl", "rehash", str(capath)]
    for argv in (rehash, update):  # the first run makes every link; not timed
        _run(argv)
    timings: dict[str, list[float]] = {"openssl rehash DIR": [], "update-ca-certificates": []}
    for rep in range(reps):
        replacement = pems[count + rep]
        for directory, argv, label in (
            (capath, rehash, "openssl rehash DIR"),
            (local, update, "update-ca-certificates"),
        ):
            entry = directory / f"{PREFIX}ca-{rep % count:05d}.crt"
            temporary = directory / f".{entry.name}.tmp"
            temporary.write_bytes(replacement)
            temporary.replace(entry)  # a new file, as a pass writes it
            timings[label].append(_run(argv))
        progress(
            f"refresh {count}: {rep + 1}/{reps}: openssl rehash "
            f"{timings['openssl rehash DIR'][-1]:.0f} ms, update-ca-certificates "
            f"{timings['update-ca-certificates'][-1]:.0f} ms"
        )
    for label, values in timings.items():
        report.add(
            figure(
                "refresh",
                f"{count} entries: one entry changed, {label}",
                "ms",
                values,
                note="the operating system's tool alone, on temporary directories",
            )
        )


def _run(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, timeout=600)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise BenchError(f"`{' '.join(argv[:2])}` exited {done.returncode}: {done.stderr[-300:]!r}")
    return elapsed
