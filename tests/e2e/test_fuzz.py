"""The hostile-input fuzz harness (bench/fuzz.py) in the suite: a few hundred examples."""

from __future__ import annotations

import os
import re

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


def test_the_output_oracle_catches_each_property() -> None:
    """The harness's checks are not vacuous: each broken property is named."""
    from bench.leaks import secret_forms
    from bench.outputs import Output, OutputBrokenError, check

    secrets = [secret_forms(b"hunter2-credential")]
    broken = {
        "control character '\\x1b'": Output("x", b"name \x1b[2J"),
        "control character '\\x9b'": Output("x", "csi \x9b".encode()),
        "not UTF-8": Output("x", b"\xff"),
        "##[": Output("x", b"ok\nfile ##[stop-commands]x\n"),
        "##vso[": Output("x", b"##vso[task.setvariable variable=a]1"),
        "runner command": Output("x", b"::error::forged"),
        "shows": Output("x", b"pw hunter2-credential"),
        "JSON": Output("x", b'{"cut": "off', json="document"),
    }
    for words, output in broken.items():
        with pytest.raises(OutputBrokenError, match=re.escape(words)):
            check(output, secrets)
    check(Output("x", b"::error file=a,line=1::fine\n", github=True), secrets)
    check(Output("x", b'{"ok": "\\u001b"}', json="document"), secrets)
