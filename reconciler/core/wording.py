"""Counts in words for people: "1 trust entry", "3,000 trust entries"."""

from __future__ import annotations

__all__ = ["counted"]

_IRREGULAR = {"entry": "entries", "directory": "directories", "policy": "policies"}


def counted(number: int, noun: str) -> str:
    """`number` with thousands separators and `noun` (its last word) in singular or plural."""
    if number == 1:
        return f"1 {noun}"
    head, _, last = noun.rpartition(" ")
    plural = _IRREGULAR.get(last) or (
        last + "es" if last.endswith(("s", "x", "ch")) else last + "s"
    )
    return f"{number:,} {head + ' ' if head else ''}{plural}"
