"""The fleet simulation runs end to end, tiny (2 gateways, 1 push), and leaves nothing running;
every query of the Grafana dashboard and of docs/metrics.md returns series from its Prometheus."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO
from tests.helpers.prometheus import require_prometheus_tool

DASHBOARD = REPO / "deploy" / "grafana" / "reconciler.json"


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line or environment names `text` (our daemons carry it in both)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if text.encode() in (entry / part).read_bytes():
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def test_fleet_bench_tiny(tmp_path: Path) -> None:
    require_prometheus_tool("prometheus")
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "bench.fleet", "--gateways", "2", "--pushes", "1",
            "--idle-s", "1", "--idle-runs", "1", "--no-bad-push", "--keep", "--json", str(out),
            "--check-queries", str(DASHBOARD), str(REPO / "docs" / "metrics.md"),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    kept = re.search(r"fleet: kept (\S+)", done.stderr)
    assert kept is not None, done.stderr
    work = kept.group(1)
    try:
        assert done.returncode == 0, done.stderr
        data = json.loads(out.read_text())
        names = [f["name"] for f in data["figures"]]
        assert "push -> all 2 converged, seen by PromQL" in names
        assert any(name.startswith("idle CPU of 2 daemons") for name in names)
        assert "push -> all 2 converged" in done.stdout
        # Every query of the dashboard and of metrics.md returned series from the fleet.
        checked = data["facts"]["queries_checked"]
        dashboard = json.loads(DASHBOARD.read_text())
        titles = {f"reconciler.json: {panel['title']}" for panel in dashboard["panels"]}
        assert titles <= set(checked)
        assert sum(1 for where in checked if where.startswith("metrics.md:")) >= 4
        assert all(count > 0 for count in checked.values())
        assert processes_mentioning(work) == [], "the bench stopped every process it started"
        logs = sorted(Path(work, "gw").glob("*/daemon.log"))
        assert len(logs) == 2
        for log in logs:
            assert '"outcome": "converged"' in log.read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)
