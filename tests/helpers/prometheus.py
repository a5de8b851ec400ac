"""Debian's prometheus tools for tests: on PATH, else a skip (a failure where CI needs them)."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ENV = "RECONCILER_REQUIRE_PROMETHEUS"


def require_prometheus_tool(program: str) -> str:
    """`promtool` or `prometheus` (package `prometheus`); skips without it unless CI requires it."""
    found = shutil.which(program)
    if found is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{program} is not installed and {REQUIRE_ENV}=1")
        pytest.skip(f"{program} is not installed (apt-get install prometheus)")
    return found
