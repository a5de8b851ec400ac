"""Waiting on a condition with a deadline: how event-driven tests synchronise, never bare sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    what: str,
    timeout: float = 20,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, and return that; at the deadline fail
    naming `what` (and `detail()`, say a daemon's log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{extra}")
        # Another process changes what we look at (files, sockets): no event reaches this one.
        time.sleep(0.02)
