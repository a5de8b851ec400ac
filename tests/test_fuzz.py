"""The hostile-input fuzz harness (bench/fuzz.py) in the suite: a few hundred examples."""

from __future__ import annotations

from bench.fuzz import run_fuzz

EXAMPLES = 200


def test_fuzzed_states_settings_var_files_and_targets_break_no_property() -> None:
    ran, failures = run_fuzz(EXAMPLES)
    assert failures == []
    assert ran >= EXAMPLES // 2  # hypothesis may stop early only when it runs out of new inputs
