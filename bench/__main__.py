"""`python -m bench [--quick] [--only NAME] [--sizes N,N] [--compare TREE] [--json PATH]`.

Each figure is a median over repeated runs, with its baseline (where there is one) measured in
the same run so that the ratio holds on a noisy machine. `--compare TREE` measures another source
tree (an earlier commit: `git archive REV | tar -x -C TREE`) in the same run: each bench four
times, half its repetitions each time, in the order TREE, this, this, TREE, both trees started
the same way; it prints each figure of both, their ratio and this tree's target. Progress goes to
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
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.harness import REPO, TRASH, BenchError, Report, merged, progress

BENCHES = ("startup", "latency", "idle", "burst", "scale", "refresh", "witness")
# Run only when named (--only): it boots a Debian machine (root, mmdebstrap, systemd-nspawn).
OPTIONAL = ("host",)
DEFAULT_JSON = REPO / "bench" / "results" / "latest.json"
DEFAULT_SIZES = (1000, 5000)
COMPARE_TURNS = ("base", "this", "this", "base")
TREE_INDEPENDENT = frozenset({"refresh"})
"""Benches of the operating system's tools alone: `--compare` runs them once, not per tree."""
"""`--compare` runs each bench four times, half its repetitions each time, in this order (ABBA):
whatever the order costs (a warm cache, the deferred work of an earlier run) falls on both."""


def _compile(package: Path) -> None:
    """Byte-compile the package measured, as installing it does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE=1 (set on some machines) would compile every module at every start,
    which no installed reconciler does."""
    import compileall

    if not compileall.compile_dir(str(package), quiet=1):
        raise SystemExit(f"bench: {package} does not compile")


Plan = dict[str, Callable[[Report, float], None]]


def _plan(quick: bool, sizes: Sequence[int]) -> Plan:
    """Each bench as a function of the report and the share of its repetitions to run (1, or
    1/2 for each turn of `--compare`)."""
    from bench import burst, host, latency, refresh, scale, startup, witness

    def reps(full: int, fast: int, share: float) -> int:
        return max(1, round((fast if quick else full) * share))

    def run_latency(report: Report, share: float) -> None:
        latency.swap_latency(report, reps(30, 8, share), None)
        latency.inplace_latency(report, reps(12, 4, share))

    def run_scale(report: Report, share: float) -> None:
        chosen = [sizes[0]] if quick else list(sizes)
        growth = scale.scale(report, chosen, reps(3, 1, share), reps(10, 3, share))
        report.facts["one_change_ms_by_entries"] = growth

    return {
        "startup": lambda report, share: startup.startup(report, reps(15, 7, share)),
        "latency": run_latency,
        "idle": lambda report, share: latency.idle_only(report, 30 * share if not quick else 9),
        "burst": lambda report, share: burst.burst(report, reps(3, 1, share)),
        "scale": run_scale,
        "refresh": lambda report, share: refresh.refresh(
            report, [100, 1000] if quick else [100, 1000, 5000], reps(3, 2, share)
        ),
        "witness": lambda report, share: witness.witness(report, reps(15, 5, share)),
        "host": lambda report, share: host.host_push(report, reps(9, 5, share)),
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
    lines = [_table(rows)]
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
        "--sizes",
        type=_sizes,
        default=DEFAULT_SIZES,
        metavar="N,N",
        help="trust entries of the scale bench (default 1000,5000; --quick: the first)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        help="measure the reconciler of another source tree instead of this one",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="TREE",
        help="also measure another source tree, taking turns with this one, and compare",
    )
    parser.add_argument(
        "--peer",
        choices=["ansible"],
        help="the same changes made by another tool, side by side (100 and 1,000 entries)",
    )
    args = parser.parse_args(argv)
    if args.tree is not None:
        _measure(args.tree)
    try:
        if args.peer is not None:
            return _peer(args)
        if args.compare is not None:
            return _compare(args, args.compare)
        return _run(args)
    finally:
        TRASH.empty()


def _peer(args: argparse.Namespace) -> int:
    from bench import peer

    why = peer.available()
    if why is not None:
        print(f"bench --peer ansible: skipped: {why}", file=sys.stderr)
        return 0
    report = Report(quick=args.quick)
    report.facts.update(_facts())
    _compile(REPO / "reconciler")
    try:
        peer.peer(report, [100] if args.quick else [100, 1000])
    except BenchError as exc:
        print(f"FAILED peer: {exc}", file=sys.stderr)
        return 1
    _write_json(args.json, {"quick": report.quick, "facts": report.facts, "figures": report})
    print(format_table(report))
    return 0


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of counts") from None
    if not sizes or any(size < 5 or size > 10_000 for size in sizes):
        raise argparse.ArgumentTypeError("each size must be between 5 and 10000")
    return sizes


def _facts() -> dict[str, object]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
    }


def _run(args: argparse.Namespace) -> int:
    chosen = args.only or list(BENCHES)
    report = Report(quick=args.quick)
    report.facts.update(_facts())
    plan = _plan(args.quick, args.sizes)
    _compile(Path(os.environ.get("BENCH_TREE", REPO)) / "reconciler")
    started = time.monotonic()
    failures = []
    for name in chosen:
        progress(f"== {name}")
        try:
            plan[name](report, 1.0)
        except BenchError as exc:
            progress(f"{name}: FAILED: {exc}")
            failures.append(f"{name}: {exc}")
    report.facts["duration_s"] = round(time.monotonic() - started, 1)
    report.facts["load_average_at_end"] = os.getloadavg()
    report.facts["failures"] = failures
    _write_json(args.json, {"quick": report.quick, "facts": report.facts, "figures": report})
    print(format_table(report))
    print(f"\n{len(report.figures)} figures in {report.facts['duration_s']} s; JSON: {args.json}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def _write_json(path: Path, value: dict[str, object]) -> None:
    def encode(item: object) -> object:
        if isinstance(item, Report):
            return [f.as_dict() for f in item.figures]
        raise TypeError(f"cannot write {type(item).__name__} as JSON")

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=encode) + "\n")


def _measure(source: Path | None) -> None:
    """Measure the reconciler of `source` (None: this tree, through the installed script)."""
    # Read by bench.harness.tree(), and by every `python -m reconciler` child (its cwd).
    for name in ("BENCH_TREE", "PYTHONPATH"):
        if source is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(source.resolve())


def _compare(args: argparse.Namespace, other: Path) -> int:
    """Every bench for both trees, in turns (ABBA), each run the same way: `python -m
    reconciler` from the tree, with the tree first on the path."""
    plan = _plan(args.quick, args.sizes)
    trees = {"base": other, "this": REPO}
    reports = {label: Report(quick=args.quick) for label in trees}
    for label, source in trees.items():
        reports[label].facts.update({**_facts(), "tree": str(source.resolve())})
        _compile(source / "reconciler")
    failures = []
    started = time.monotonic()
    for name in args.only or list(BENCHES):
        if name in TREE_INDEPENDENT:
            progress(f"== {name} (the tools alone: once)")
            try:
                plan[name](reports["this"], 1.0)
            except BenchError as exc:
                failures.append(f"{name}: {exc}")
            continue
        for turn, label in enumerate(COMPARE_TURNS, start=1):
            progress(f"== {name}, turn {turn}/{len(COMPARE_TURNS)} ({label}: {trees[label]})")
            _measure(trees[label])
            try:
                plan[name](reports[label], 1 / 2)
            except BenchError as exc:
                if label == "base":
                    # A bench of what the base does not have yet (a new command): this tree's
                    # figures stand alone, with "-" for the base.
                    progress(f"{name}: the base cannot run it: {exc}")
                else:
                    failures.append(f"{name} ({label}): {exc}")
    _measure(None)
    for report in reports.values():
        report.figures = merged(report.figures)
    print(format_comparison(reports["base"], reports["this"]))
    duration = round(time.monotonic() - started, 1)
    print(f"\nbase: {other}; this: {REPO}; {duration} s; JSON: {args.json}")
    _write_json(
        args.json,
        {label: {"quick": r.quick, "facts": r.facts, "figures": r} for label, r in reports.items()},
    )
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


WORSE = 1.05
"""`--compare` marks a figure of this tree over this many times the base's as worse."""


def format_comparison(base: Report, this: Report) -> str:
    """Every figure of both trees, their ratio and this tree's target: a table to quote. A
    figure measured against a baseline gets a second row, its ratio to that baseline."""
    header = ("figure", "unit", "base", "this", "this/base", "target", "this tree")
    rows: list[tuple[str, ...]] = [header]
    before = {f.key: f for f in base.figures}
    for now in this.figures:
        old = before.get(now.key)
        lines = [(now.name, now.unit, old.stats.median if old else None, now.stats.median)]
        if now.baseline is not None:
            old_ratio = old.ratio if old is not None else None
            lines.append((f"{now.name}: ratio to {now.baseline_name}", "x", old_ratio, now.ratio))
        for number, (name, unit, was, is_) in enumerate(lines):
            checked = (now.limit_of == "ratio") == (number == 1)
            ratio = is_ / was if was and is_ is not None else None
            mark = " worse" if ratio is not None and ratio > WORSE else ""
            rows.append(
                (
                    f"{now.bench}: {name}",
                    unit,
                    _number(was),
                    _number(is_),
                    f"{ratio:.2f}x{mark}" if ratio is not None else "",
                    (now.target or "") if checked else "",
                    ("ok" if now.met else "MISSED") if checked and now.met is not None else "",
                )
            )
    return _table(rows)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
