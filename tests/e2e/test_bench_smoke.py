"""The benchmark harness runs end to end (`python -m bench`); it measures, it asserts no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def _run(module: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS` from the repository (`path`: its PATH instead of ours)."""
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        env=env,
    )


def test_bench_startup_quick_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _run("bench", "--quick", "--only", "startup", "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    names = [figure["name"] for figure in data["figures"]]
    assert any("reconciler validate" in name for name in names)
    assert all(figure["n"] >= 1 and figure["baseline"] for figure in data["figures"])
    assert "figure" in result.stdout  # the table's header
    assert "[bench" in result.stderr  # progress lines


def test_compare_pools_the_turns_and_checks_the_target_on_the_pool() -> None:
    """`--compare` measures each tree in two turns: one figure each, samples pooled, the target
    decided on the pooled median, a ratio row for a figure with a baseline, worse marked."""
    from bench.__main__ import format_comparison
    from bench.harness import Report, figure, merged

    this = Report(quick=True)
    this.figures = merged(
        [
            figure("latency", "swap", "ms", [10, 12], baseline=[8, 8], at_most=1.5),
            figure("scale", "cold", "s", [6.0], at_most=5.0),
            figure("latency", "swap", "ms", [11, 30], baseline=[9, 7], at_most=1.5),
            figure("scale", "cold", "s", [4.0, 4.5], at_most=5.0),
        ]
    )
    swap, cold = this.figures
    assert swap.samples == (10, 12, 11, 30)
    assert swap.baseline_samples == (8, 8, 9, 7)
    assert swap.stats.median == 11.5
    assert swap.ratio == 11.5 / 8
    assert swap.met
    assert cold.stats.median == 4.5
    assert cold.met  # 6.0 alone would have missed it
    base = Report(quick=True)
    base.figures = [
        figure("latency", "swap", "ms", [20], baseline=[8]),
        figure("scale", "cold", "s", [4.0]),
    ]
    table = format_comparison(base, this).splitlines()
    ratio_row = next(line for line in table if "swap: ratio to" in line)
    assert "2.500" in ratio_row
    assert "1.438" in ratio_row
    assert ratio_row.endswith("ok")
    cold_row = next(line for line in table if "scale: cold" in line)
    assert "1.12x worse" in cold_row
    assert "<= 5" in cold_row


def test_trash_moves_a_directory_aside_at_once_and_deletes_it_at_the_end(tmp_path: Path) -> None:
    from bench.harness import Trash

    done = tmp_path / "done"
    (done / "sub").mkdir(parents=True)
    (done / "sub" / "file").write_text("x")
    trash = Trash()
    trash.discard(done)
    assert not done.exists()
    kept = list(Path(trash._dir or "/nonexistent").iterdir())
    assert [p.name for p in kept] == ["1"]
    assert (kept[0] / "sub" / "file").exists()
    trash.empty()
    assert not kept[0].exists()


def test_peer_bench_without_ansible_says_so_and_measures_nothing(tmp_path: Path) -> None:
    """ansible-core is an optional extra: without ansible-playbook the peer bench is skipped,
    with the reason and how to install it."""
    bare = tmp_path / "bin"
    bare.mkdir()
    result = _run("bench", "--peer", "ansible", "--json", str(tmp_path / "p.json"), path=str(bare))
    assert result.returncode == 0, result.stderr
    assert "skipped: ansible-playbook is not installed" in result.stderr
    assert ".[peer]" in result.stderr
    assert not (tmp_path / "p.json").exists()


def test_bench_phases_profiles_the_three_passes() -> None:
    """`python -m bench.phases`: a cold pass, a full pass with nothing to change and a one-entry
    change, each with the phases it went through."""
    result = _run("bench.phases", "--entries", "20")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "cold pass (empty ROOT): converged" in out
    assert "a full pass, nothing to change: no-change" in out
    assert "one trust entry changed (as the daemon): converged" in out
    changed = out.split("one trust entry changed")[1]
    for phase in ("read the desired state", "stage + journal (prepare)", "trust links", "hooks"):
        assert phase in changed, phase
