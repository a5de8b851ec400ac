"""PromQL that people are given (the Grafana dashboard's panels, the docs' ```promql blocks),
run against a real Prometheus scraping real daemons: each must parse and return series.

Used by `python -m bench.fleet --check-queries FILE...`; tests/e2e/test_fleet_bench.py runs it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import BenchError

#: Grafana's interval variables, as a Prometheus query needs them spelled out.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}


def queries_from(path: Path) -> list[tuple[str, str]]:
    """(where, expr) of each query in a Grafana dashboard (.json) or a page's promql blocks."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        document = json.loads(text)
        return [
            (f"{path.name}: {panel['title']}", target["expr"])
            for panel in document["panels"]
            for target in panel.get("targets", [])
        ]
    found = []
    for match in re.finditer(r"^```promql\n(.*?)^```", text, re.M | re.S):
        line = text[: match.start()].count("\n") + 1
        found.append((f"{path.name}:{line}", match.group(1).strip()))
    return found


def concrete(expr: str) -> str:
    """`expr` with Grafana's variables replaced by durations."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def check(
    query: Callable[[str], list[dict[str, Any]]],
    queries: list[tuple[str, str]],
    timeout_s: float,
) -> dict[str, int]:
    """Wait until every query returns at least one series; where -> series count. BenchError
    names a query that does not parse, or those still empty at the deadline."""
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while True:
        empty = []
        for where, expr in queries:
            try:
                result = query(concrete(expr))
            except urllib.error.HTTPError as exc:
                raise BenchError(
                    f"{where}: {expr!r}: {exc.read().decode(errors='replace')}"
                ) from exc
            counts[where] = len(result)
            if not result:
                empty.append(f"{where}: {expr}")
        if not empty:
            return counts
        if time.monotonic() >= deadline:
            raise BenchError("queries without a series:\n  " + "\n  ".join(empty))
        time.sleep(0.5)  # the next scrape or rule evaluation (1 s intervals)
