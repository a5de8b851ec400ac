"""core.memo: bounded in count and, when asked, in the weight of what it keeps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.core import trust
from reconciler.core.memo import Memo


def test_the_oldest_entry_goes_when_the_count_is_reached() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("c", 3)
    assert list(memo) == ["b", "c"]


def test_weight_bounds_what_is_kept_and_is_given_back_when_entries_go() -> None:
    memo: Memo[str, bytes] = Memo(100, max_weight=10, weigh=len)
    memo.put("a", b"1111")
    memo.put("b", b"2222")
    memo.put("c", b"3333")  # 12 > 10: the oldest goes
    assert list(memo) == ["b", "c"]
    assert memo.weight == 8
    memo.put("b", b"2")  # put again: its old weight is given back, it becomes newest
    assert list(memo) == ["c", "b"]
    assert memo.weight == 5
    assert memo.put("huge", b"9" * 11) == b"9" * 11  # heavier than the bound alone: not kept
    assert "huge" not in memo
    assert memo.weight == 5


def test_a_bound_on_weight_needs_a_way_to_weigh() -> None:
    with pytest.raises(ValueError, match="go together"):
        Memo(10, max_weight=10)


def test_many_large_trust_files_never_hold_more_than_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A state whose trust files are large and keep changing (a pushed bundle, hostile junk)
    cannot make the parse memo hold more than its byte bound, however many it sees."""
    bound = 256 * 1024
    memo: Memo[str, trust._ParsedTrust] = Memo(
        trust.CACHE_SIZE, bound, lambda parsed: len(parsed.data)
    )
    monkeypatch.setattr(trust, "_parsed", memo)
    now = datetime.now(UTC)
    for number in range(64):
        junk = bytes([number]) * (64 * 1024)  # not PEM: a finding, and a memo entry all the same
        trust.check_trust(f"junk{number}", junk, file=f"trust/junk{number}.pem", now=now)
    assert 0 < memo.weight <= bound
    assert sum(len(parsed.data) for parsed in memo.values()) == memo.weight
