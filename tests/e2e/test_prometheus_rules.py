"""deploy/prometheus: the rules pass `promtool check rules` and their `promtool test rules`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.helpers import REPO
from tests.helpers.prometheus import require_prometheus_tool

RULES_DIR = REPO / "deploy" / "prometheus"
RULES = RULES_DIR / "reconciler.rules.yml"
RULE_TESTS = RULES_DIR / "reconciler.rules.test.yml"


def promtool() -> str:
    return require_prometheus_tool("promtool")


def run(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_the_rules_are_valid() -> None:
    done = run("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rule_unit_tests_pass() -> None:
    done = run("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\S+)$", RULES.read_text(), re.MULTILINE))
    # A case that expects the alert to fire lists it on the lines after `exp_alerts:`.
    firing = set(re.findall(r"alertname: (\S+)\n\s+exp_alerts:\n", RULE_TESTS.read_text()))
    assert len(alerts) >= 9
    assert alerts == firing, "each alert is tested firing at least once"


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    # The unit tests can fail: the same tests against a rule with its threshold changed.
    (tmp_path / RULES.name).write_text(
        RULES.read_text().replace(
            "reconciler_consecutive_failures >= 3", "reconciler_consecutive_failures >= 4"
        )
    )
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    done = run("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "ReconcilerPassesFailing" in done.stdout + done.stderr
