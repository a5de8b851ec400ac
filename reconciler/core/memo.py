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
    """At most `limit` entries, and (with `max_weight`) at most that total weight, each entry
    weighing what `put` is told (the bytes a key holds, say); `put` adds one, dropping the oldest
    while either bound would be passed."""

    __slots__ = ("_weights", "limit", "max_weight", "weight")

    def __init__(self, limit: int, max_weight: int | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.max_weight = max_weight
        self.weight = 0
        self._weights: dict[K, int] = {}

    def put(self, key: K, value: V, weight: int = 0) -> V:
        """Keep `value` under `key`, and return it. An entry heavier than `max_weight` alone is
        returned without being kept."""
        if self.max_weight is not None and weight > self.max_weight:
            return value
        if key in self:
            self._drop(key)
        while self and (
            len(self) >= self.limit
            or (self.max_weight is not None and self.weight + weight > self.max_weight)
        ):
            self._drop(next(iter(self)))
        self[key] = value
        if weight:
            self._weights[key] = weight
            self.weight += weight
        return value

    def _drop(self, key: K) -> None:
        del self[key]
        self.weight -= self._weights.pop(key, 0)
