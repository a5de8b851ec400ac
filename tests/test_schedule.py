"""The daemon's next step, decided by a pure function: no threads, clocks or sleeps."""

from __future__ import annotations

from reconciler.core.schedule import Action, Backoff, next_action

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
