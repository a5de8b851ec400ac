"""The daemon's timing rules as pure values: backoff, the debounce window and the next step."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.schedule import (
    Action,
    Backoff,
    Debounce,
    next_action,
    next_deadline,
    retry_delay,
)


def test_retry_delay_doubles_from_30_s_up_to_the_resync_interval() -> None:
    assert [retry_delay(n, cap_s=300) for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]


def test_retry_delay_never_exceeds_a_cap_below_30_s() -> None:
    assert retry_delay(1, cap_s=10) == 10


@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=0.001, max_value=86_400))
def test_retry_delay_is_monotonic_and_capped(failures: int, cap: float) -> None:
    delay = retry_delay(failures, cap)
    assert 0 < delay <= cap
    assert retry_delay(failures + 1, cap) >= delay


def test_a_failed_revision_backs_off_and_a_new_one_is_not_held() -> None:
    backoff = Backoff().after_pass("failed", "rev-a", now=100.0, cap_s=300)
    assert backoff.active
    assert backoff.retry_at == 130.0
    assert backoff.holds("rev-a", now=129.9)
    assert not backoff.holds("rev-b", now=101.0), "a new push is tried at once"
    assert not backoff.holds("rev-a", now=130.0), "due: retried"

    again = backoff.after_pass("failed", "rev-a", now=130.0, cap_s=300)
    assert (again.failures, again.retry_at) == (2, 190.0)


def test_a_different_failing_revision_starts_its_own_schedule() -> None:
    backoff = Backoff().after_pass("failed", "rev-a", now=0.0, cap_s=300)
    backoff = backoff.after_pass("failed", "rev-a", now=30.0, cap_s=300)
    other = backoff.after_pass("failed", "rev-b", now=40.0, cap_s=300)
    assert (other.revision, other.failures, other.retry_at) == ("rev-b", 1, 70.0)


@pytest.mark.parametrize("outcome", ["converged", "no-change", "rejected", "suspended"])
def test_any_other_outcome_clears_the_backoff(outcome: str) -> None:
    backoff = Backoff().after_pass("failed", "rev-a", now=0.0, cap_s=300)
    cleared = backoff.after_pass(outcome, "rev-a", now=1.0, cap_s=300)
    assert not cleared.active
    assert not cleared.holds("rev-a", now=1.0)


def test_debounce_waits_for_quiet() -> None:
    window = Debounce(quiet_s=0.2, max_wait_s=2.0)
    assert window.due_at() is None
    window = window.note(10.0).note(10.1)
    assert window.due_at() == pytest.approx(10.3)


def test_debounce_gives_up_waiting_for_quiet_after_max_wait() -> None:
    window = Debounce(quiet_s=0.2, max_wait_s=2.0)
    for tick in range(30):  # an event every 0.1 s: never quiet
        window = window.note(10.0 + tick * 0.1)
    assert window.due_at() == pytest.approx(12.0)


def test_a_swap_makes_the_pass_due_at_once() -> None:
    window = Debounce(quiet_s=0.2, max_wait_s=2.0).note(10.0).note(10.5, urgent=True)
    due = window.due_at()
    assert due is not None
    assert due <= 10.5


def test_a_cleared_window_keeps_its_timings() -> None:
    window = Debounce(0.2, 2.0).note(1.0, urgent=True).cleared()
    assert not window.pending
    assert (window.quiet_s, window.max_wait_s, window.urgent) == (0.2, 2.0, False)


@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=50))
def test_the_pass_is_never_later_than_max_wait_after_the_first_event(times: list[float]) -> None:
    window = Debounce(quiet_s=0.2, max_wait_s=2.0)
    ordered = sorted(times)
    for moment in ordered:
        window = window.note(moment)
    due = window.due_at()
    assert due is not None
    assert due <= ordered[0] + 2.0
    assert due <= ordered[-1] + 0.2


def test_next_deadline_ignores_absent_ones() -> None:
    assert next_deadline(None, 5.0, 3.0) == 3.0
    assert next_deadline(None, None) is None


RESYNC = 1000.0


def _backing_off(retry_at: float) -> Backoff:
    return Backoff("rev+digest", 1, retry_at)


def test_with_nothing_due_it_waits_for_the_resync() -> None:
    assert next_action(10.0, event_due=None, backoff=Backoff(), resync_at=RESYNC) == Action(
        "wait", wait_s=990.0
    )


def test_a_forced_pass_comes_first() -> None:
    action = next_action(
        10.0, event_due=5.0, backoff=_backing_off(20.0), resync_at=5.0, forced="reload"
    )
    assert action == Action("pass", "reload")


def test_a_due_resync_runs_before_due_events() -> None:
    assert next_action(RESYNC, event_due=1.0, backoff=Backoff(), resync_at=RESYNC) == Action(
        "pass", "resync"
    )


def test_due_events_run_a_pass() -> None:
    assert next_action(10.0, event_due=9.5, backoff=Backoff(), resync_at=RESYNC) == Action(
        "pass", "event"
    )


def test_events_not_yet_due_set_the_wait() -> None:
    assert next_action(10.0, event_due=10.25, backoff=Backoff(), resync_at=RESYNC) == Action(
        "wait", wait_s=0.25
    )


def test_while_backing_off_the_retry_replaces_the_resync() -> None:
    backoff = _backing_off(50.0)
    assert next_action(40.0, event_due=None, backoff=backoff, resync_at=30.0) == Action(
        "wait", wait_s=10.0
    )
    assert next_action(50.0, event_due=None, backoff=backoff, resync_at=30.0) == Action(
        "pass", "retry"
    )


def test_events_while_backing_off_ask_for_a_check_of_the_revision() -> None:
    """The loop then reads the revision: the failing one waits, a new one runs at once."""
    backoff = _backing_off(50.0)
    action = next_action(40.0, event_due=39.0, backoff=backoff, resync_at=RESYNC)
    assert action == Action("check", "event")
    assert backoff.holds("rev+digest", 40.0)
    assert not backoff.holds("new-rev+digest", 40.0)


def test_without_any_deadline_it_waits_for_an_event() -> None:
    action = next_action(10.0, event_due=None, backoff=_backing_off(5.0), resync_at=RESYNC)
    assert action == Action("pass", "retry")
