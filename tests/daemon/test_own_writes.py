"""The daemon's own writes start no pass, and an edit by someone else during or right after a
pass is still corrected: the target events are compared with what the pass left in place."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.sandbox import Sandbox


def _outcomes(daemon: Daemon) -> list[str]:
    return [p["outcome"] for p in daemon.passes()]


def test_an_applied_pass_is_not_followed_by_a_pass_of_its_own_echo(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    daemon.wait_idle_after(1)
    assert daemon.log_events("events.own_writes"), "the start pass wrote every target"
    assert _outcomes(daemon) == ["converged"]

    gateway = sandbox.state.path / "gateway.toml"
    gateway.write_text(gateway.read_text().replace('"intermediate"', '"modern"'))
    wait_for(lambda: len(daemon.passes()) == 2, "the pass for the push", daemon)
    daemon.wait_idle_after(2)

    assert _outcomes(daemon) == ["converged", "converged"]
    recent = json.loads((sandbox.var / "status.json").read_text())["recent"]
    assert [entry["outcome"] for entry in recent] == ["converged", "converged"]
    assert daemon.stop() == 0


def test_an_edit_made_during_a_pass_is_corrected_by_the_next(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """A hook of the pass edits a target the pass has just written: that is someone else's
    change, made before the pass ended, and must not pass for the pass's own write."""
    profiles = sandbox.root / "data" / "server-profiles.json"
    sandbox.hooks = (
        '[[hooks]]\nname = "meddle"\non = ["console"]\n'
        f'run = ["/bin/sh", "-c", "echo \'# edited\' >> {profiles}"]\n'
    )
    daemon = start_daemon()
    assert _outcomes(daemon)[0] == "converged"

    def corrected() -> list[str]:
        return [r["path"] for r in daemon.audit("drift.corrected")]

    wait_for(lambda: str(profiles) in corrected(), "the hook's edit corrected", daemon)
    daemon.wait_idle_after(2)
    assert b"# edited" not in profiles.read_bytes()
    assert sandbox.run("plan").returncode == 0
    assert daemon.stop() == 0


def test_an_edit_right_after_a_pass_is_corrected(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """Edited the moment the pass reports its end, while the events of its own writes are still
    waiting out the quiet period."""
    daemon = start_daemon()
    inbound = sandbox.root / "data" / "smtp-inbound.json"
    wanted = inbound.read_bytes()
    inbound.write_text('{"tls": "off", "cert_file": null, "key_file": null}\n')

    wait_for(
        lambda: [r["path"] for r in daemon.audit("drift.corrected")] == [str(inbound)],
        "the edit corrected",
        daemon,
    )
    wait_for(lambda: inbound.read_bytes() == wanted, "the inbound settings restored", daemon)
    assert daemon.stop() == 0
