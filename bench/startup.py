"""Start-up: `reconciler validate` on the example state, and `python -c pass` in the same run."""

from __future__ import annotations

import os
from pathlib import Path

from bench.harness import PYTHON, REPO, BenchError, Report, figure, progress, timed_run

EXAMPLE = REPO / "desired-state"


def ensure_example_identity() -> None:
    """desired-state/tls is generated, never committed: make it as `make demo` would."""
    if not (EXAMPLE / "tls" / "cert.pem").exists():
        from reconciler.support.devpki import write_demo_identity

        progress("startup: generating desired-state/tls (python -m reconciler.support.devpki)")
        write_demo_identity(str(EXAMPLE / "tls"))


def reconciler_command() -> list[str]:
    """What an operator runs: the `reconciler` script installed beside this interpreter (the
    README's set-up makes it); `python -m reconciler` for another tree (`--tree`), or without."""
    script = Path(PYTHON).parent / "reconciler"
    if "BENCH_TREE" in os.environ or not script.exists():
        return [PYTHON, "-m", "reconciler"]
    return [str(script)]


def startup(report: Report, reps: int) -> None:
    ensure_example_identity()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    validate = [*reconciler_command(), "validate", "--state", str(EXAMPLE)]
    bare = [PYTHON, "-c", "pass"]
    timed_run(validate, env)  # warm the page cache and .pyc files; not counted
    walls: list[float] = []
    cpus: list[float] = []
    base_walls: list[float] = []
    base_cpus: list[float] = []
    for rep in range(reps):
        wall, cpu, code = timed_run(validate, env)
        if code != 0:
            raise BenchError(f"`reconciler validate` on {EXAMPLE} exited {code}")
        walls.append(wall)
        cpus.append(cpu)
        wall, cpu, _ = timed_run(bare, env)
        base_walls.append(wall)
        base_cpus.append(cpu)
        if rep % 5 == 4 or rep == reps - 1:
            progress(f"startup {rep + 1}/{reps}: validate {walls[-1]:.3f} s")
    report.add(
        figure(
            "startup",
            "`reconciler validate` on desired-state/, wall",
            "s",
            walls,
            baseline=base_walls,
            baseline_name="python -c pass",
            at_most=0.4,
            of="median",
            target="<= 0.4 s",
        )
    )
    report.add(
        figure(
            "startup",
            "`reconciler validate` on desired-state/, CPU (user+sys)",
            "s",
            cpus,
            baseline=base_cpus,
            baseline_name="python -c pass",
            note="less sensitive to other load than the wall time",
        )
    )
