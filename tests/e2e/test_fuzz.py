"""The hostile-input fuzz harness (bench/fuzz.py) in the suite: a few hundred examples."""

from __future__ import annotations

import os

import pytest

from bench.fuzz import run_daemon_fuzz, run_fuzz

EXAMPLES = 200
BUDGET_S = 300
"""A slow, shared machine runs fewer examples rather than hitting the suite's timeout."""


@pytest.mark.timeout(BUDGET_S + 120)
def test_fuzzed_states_settings_var_files_and_targets_break_no_property() -> None:
    environ = dict(os.environ)
    ran, failures = run_fuzz(EXAMPLES, max_seconds=BUDGET_S)
    assert dict(os.environ) == environ, "the harness leaked environment variables"
    assert failures == []
    assert ran >= 50  # hypothesis stops early only when out of new inputs or of time


DAEMON_EXAMPLES = 15
DAEMON_BUDGET_S = 150


@pytest.mark.timeout(DAEMON_BUDGET_S + 120)
def test_the_daemon_applies_the_next_good_push_after_fuzzed_damage() -> None:
    environ = dict(os.environ)
    ran, failures = run_daemon_fuzz(DAEMON_EXAMPLES, max_seconds=DAEMON_BUDGET_S)
    assert dict(os.environ) == environ, "the harness leaked environment variables"
    assert failures == []
    assert ran >= 5
