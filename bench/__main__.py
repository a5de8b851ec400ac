"""`python -m bench [--quick] [--only NAME] [--compare TREE] [--json PATH]`: run, print, save JSON.

Each figure is a median over repeated runs, with its baseline (where there is one) measured in
the same run so that the ratio holds on a noisy machine. `--compare TREE` measures another source
tree (an earlier commit: `git archive REV | tar -x -C TREE`) in the same run, bench by bench,
alternating with this one, and prints each figure of both with their ratio. Progress goes to
stderr, the tables to stdout, everything to the JSON file (default bench/results/latest.json,
git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import REPO, BenchError, Report, progress

BENCHES = ("startup", "latency", "idle", "burst", "scale", "witness")
# Run only when named (--only): it boots a Debian machine (root, mmdebstrap, systemd-nspawn).
OPTIONAL = ("host",)
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"


def _compile(package: Path) -> None:
    """Byte-compile the package measured, as installing it does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE=1 (set on some machines) would compile every module at every start,
    which no installed reconciler does."""
    import compileall

    if not compileall.compile_dir(str(package), quiet=1):
        raise SystemExit(f"bench: {package} does not compile")


def _plan(quick: bool) -> dict[str, Callable[[Report], None]]:
    from bench import burst, host, latency, scale, startup, witness

    def run_latency(report: Report) -> None:
        latency.swap_latency(report, 8 if quick else 30, None)
        latency.inplace_latency(report, 4 if quick else 12)

    def run_scale(report: Report) -> None:
        sizes = [1000] if quick else [1000, 5000, 10000]
        growth = scale.scale(report, sizes, 1 if quick else 3, 3 if quick else 10)
        report.facts["one_change_ms_by_entries"] = growth

    return {
        "startup": lambda report: startup.startup(report, 7 if quick else 15),
        "latency": run_latency,
        "idle": lambda report: latency.idle_only(report, 9 if quick else 30),
        "burst": lambda report: burst.burst(report, 1 if quick else 3),
        "scale": run_scale,
        "witness": lambda report: witness.witness(report, 5 if quick else 15),
        "host": lambda report: host.host_push(report, 5 if quick else 9),
    }


def format_table(report: Report) -> str:
    header = ("figure", "n", "median", "p90", "min", "max", "baseline", "ratio", "target")
    rows = [header]
    for f in report.figures:
        s = f.stats
        rows.append(
            (
                f"{f.bench}: {f.name} [{f.unit}]",
                str(s.n),
                f"{s.median:.3f}",
                f"{s.p90:.3f}",
                f"{s.min:.3f}",
                f"{s.max:.3f}",
                f"{f.baseline.median:.3f}" if f.baseline else "",
                f"{f.ratio:.2f}x" if f.ratio is not None else "",
                f"{f.target} {'ok' if f.met else 'MISSED'}" if f.target else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {f.bench}: {f.name}: {f.note}" for f in report.figures if f.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under 2 min)")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHES + OPTIONAL,
        metavar="NAME",
        help=f"one of {BENCHES + OPTIONAL} ({', '.join(OPTIONAL)} only when named)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument(
        "--tree",
        type=Path,
        help="measure the reconciler of another source tree instead of this one",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="also measure another source tree, alternating with this one, and compare",
    )
    args = parser.parse_args(argv)
    if args.tree is not None:
        _measure(args.tree)
    if args.compare is not None:
        return _compare(args, args.compare)
    chosen = args.only or list(BENCHES)
    report = Report(quick=args.quick)
    report.facts.update(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "load_average_at_start": os.getloadavg(),
        }
    )
    plan = _plan(args.quick)
    _compile(Path(os.environ.get("BENCH_TREE", REPO)) / "reconciler")
    started = time.monotonic()
    failures = []
    for name in chosen:
        progress(f"== {name}")
        try:
            plan[name](report)
        except BenchError as exc:
            progress(f"{name}: FAILED: {exc}")
            failures.append(f"{name}: {exc}")
    report.facts["duration_s"] = round(time.monotonic() - started, 1)
    report.facts["load_average_at_end"] = os.getloadavg()
    report.facts["failures"] = failures
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "quick": report.quick,
                "facts": report.facts,
                "figures": [f.as_dict() for f in report.figures],
            },
            indent=2,
        )
        + "\n"
    )
    print(format_table(report))
    print(f"\n{len(report.figures)} figures in {report.facts['duration_s']} s; JSON: {args.json}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def _measure(source: Path | None) -> None:
    """Measure the reconciler of `source` (None: this tree) from now on."""
    # Read by bench.harness.tree(), and by every `python -m reconciler` child (its cwd).
    for name in ("BENCH_TREE", "PYTHONPATH"):
        if source is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(source.resolve())


def _compare(args: argparse.Namespace, other: Path) -> int:
    """Each bench for `other`, then for this tree, bench by bench: both under the same load."""
    plan = _plan(args.quick)
    reports = {"base": Report(quick=args.quick), "this": Report(quick=args.quick)}
    trees = {"base": other, "this": None}
    for source in trees.values():
        _compile((source or REPO) / "reconciler")
    failures = []
    started = time.monotonic()
    for name in args.only or list(BENCHES):
        for label, source in trees.items():
            progress(f"== {name} ({label}: {source or REPO})")
            _measure(source)
            try:
                plan[name](reports[label])
            except BenchError as exc:
                failures.append(f"{name} ({label}): {exc}")
    _measure(None)
    rows = [("figure", "base median", "this median", "this/base")]
    base = {(f.bench, f.name): f for f in reports["base"].figures}
    for figure in reports["this"].figures:
        before = base.get((figure.bench, figure.name))
        if before is None:
            continue
        ratio = figure.stats.median / before.stats.median if before.stats.median else float("nan")
        rows.append(
            (
                f"{figure.bench}: {figure.name} [{figure.unit}]",
                f"{before.stats.median:.3f}",
                f"{figure.stats.median:.3f}",
                f"{ratio:.2f}x",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for number, row in enumerate(rows):
        print(
            "  ".join(
                [
                    row[0].ljust(widths[0]),
                    *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
                ]
            )
        )
        if number == 0:
            print("  ".join("-" * w for w in widths))
    duration = round(time.monotonic() - started, 1)
    print(f"\nbase: {other}; this: {REPO}; {duration} s; JSON: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                label: {
                    "quick": r.quick,
                    "facts": r.facts,
                    "figures": [f.as_dict() for f in r.figures],
                }
                for label, r in reports.items()
            },
            indent=2,
        )
        + "\n"
    )
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
