"""The daemon's backoff after a pass that raised: it holds back nothing pushed meanwhile."""

from __future__ import annotations

import time

import pytest

from reconciler.daemon.loop import Daemon, peek_state
from reconciler.errors import ReconcilerError
from tests.helpers.sandbox import Sandbox


def test_a_push_that_lands_while_a_pass_fails_is_not_held_back(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass raises before it reads the state (var/journal.json planted as a socket, say)
    while a new push lands: what the pass read is unknown, and the push, read after it, must be
    tried at its event, not after the failure's retry delay."""
    daemon = Daemon(sandbox.settings())

    def pass_that_fails_while_a_push_lands(*_: object) -> None:
        sandbox.state.profile("pushed", 'url = "smtps://pushed.example.com"\n')
        raise ReconcilerError("var/journal.json: is not a regular file (it is a socket)")

    monkeypatch.setattr(daemon, "_locked_pass", pass_that_fails_while_a_push_lands)
    try:
        daemon._cycle("event")
        assert daemon._backoff.active, "the failure backs off"
        pushed = peek_state(sandbox.state.path, ())
        assert pushed is not None
        assert not daemon._backoff.holds(pushed, time.monotonic())
    finally:
        daemon._tools.recorder.close()
        daemon._wakeup.close()
