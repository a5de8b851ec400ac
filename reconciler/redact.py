"""Scrubs remembered secret values (profile credentials) from text before it is output."""

from __future__ import annotations

import threading

REDACTED = "[REDACTED]"

_lock = threading.Lock()
_remembered: set[str] = set()


def remember_secret(value: bytes) -> None:
    """From now on, `scrub` replaces this value's stripped text form wherever it appears."""
    text = value.decode("utf-8", "replace").strip()
    if text:
        with _lock:
            _remembered.add(text)


def scrub(text: str) -> str:
    """`text` with every remembered secret value replaced by [REDACTED]."""
    with _lock:
        values = sorted(_remembered, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text
