"""A bounded map from what names an input (its digest, a frozen value) to what was derived from it.

A daemon validates and renders the same thousands of trust entries and profiles pass after pass.
Where the input itself need not be kept (a certificate's DER, once described), a memo keeps what was
derived by a small key instead. Lookups are a plain dict's; when full, the oldest entry goes first
(an entry still in use is derived again once, then kept anew).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(dict[K, V]):
    """At most `limit` entries and, with `weigh` (what an entry's value weighs: the bytes it
    holds, say), at most `max_weight` in all; `put` adds one, dropping the oldest while either
    bound would be passed. A value's weight is asked again when it goes, never stored: it must
    not change."""

    __slots__ = ("_weigh", "limit", "max_weight", "weight")

    def __init__(
        self, limit: int, max_weight: int | None = None, weigh: Callable[[V], int] | None = None
    ) -> None:
        super().__init__()
        if (max_weight is None) != (weigh is None):
            raise ValueError("max_weight and weigh go together")
        self.limit = limit
        self.max_weight = max_weight
        self._weigh = weigh
        self.weight = 0

    def put(self, key: K, value: V) -> V:
        """Keep `value` under `key`, and return it. A value heavier than `max_weight` alone is
        returned without being kept."""
        weight = self._weigh(value) if self._weigh is not None else 0
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
        self.weight += weight
        return value

    def _drop(self, key: K) -> None:
        value = self.pop(key)
        if self._weigh is not None:
            self.weight -= self._weigh(value)
