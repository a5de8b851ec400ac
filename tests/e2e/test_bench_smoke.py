"""The benchmark harness runs end to end (`python -m bench`); it measures, it asserts no timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_bench_startup_quick_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "startup", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    names = [figure["name"] for figure in data["figures"]]
    assert any("reconciler validate" in name for name in names)
    assert all(figure["n"] >= 1 and figure["baseline"] for figure in data["figures"])
    assert "figure" in result.stdout  # the table's header
    assert "[bench" in result.stderr  # progress lines
