"""A bounded map from what names an input (its digest, a frozen value) to what was derived from it.

A daemon validates and renders the same thousands of trust entries and profiles pass after pass.
Where the input itself need not be kept (a certificate's DER, once described), a memo keeps what was
derived by a small key instead. Lookups are a plain dict's; when full, the oldest entry goes first
(an entry still in use is derived again once, then kept anew).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(dict[K, V]):
    """At most `limit` entries; `put` adds one, dropping the oldest when full."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> V:
        """Keep `value` under `key`, and return it."""
        if len(self) >= self.limit:
            del self[next(iter(self))]
        self[key] = value
        return value
