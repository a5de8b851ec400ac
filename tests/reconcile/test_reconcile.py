"""The pass as a call: reconcile(settings, memory, hints, tools) on real files, no daemon.

Each test threads the returned PassMemory into the next call, as `apply` and the daemon do, and
checks what the memory carries (what was reported once, the observations) and what the result
tells the scheduler (the state it backs off by).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.audit.writer import AuditLog
from reconciler.core.outcome import Outcome
from reconciler.core.schedule import Backoff, state_key
from reconciler.gateway import TargetEvents
from reconciler.reconcile.events import Recorder
from reconciler.reconcile.runner import Hints, PassMemory, PassResult, Tools, reconcile
from reconciler.txn import records
from reconciler.txn.lock import RootLock
from tests.helpers.proc import read_calls
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki


class Gateway:
    """One sandbox, its settings and an open audit log: passes run as the daemon runs them."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.settings = sandbox.settings()
        self.audit_path = self.settings.audit_path
        self.tools = Tools(Recorder(AuditLog(self.audit_path)))
        self.lock = RootLock(self.settings.var_dir)
        self.memory = PassMemory()

    def run(self, events: TargetEvents | None = None) -> PassResult:
        with self.lock.held(5):
            hints = Hints(events, undisturbed=self.lock.undisturbed)
            result, self.memory = reconcile(self.settings, self.memory, hints, self.tools)
        return result

    def quiet_targets(self) -> TargetEvents:
        """What the daemon's watches hand a pass when nobody touched a target."""
        dirs = (self.sandbox.root / "data", self.sandbox.root / "nginx", self.sandbox.trust_dir)
        return TargetEvents(frozenset(os.path.realpath(d) for d in dirs), frozenset())

    def events(self, name: str | None = None) -> list[dict[str, object]]:
        import json

        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        found = [json.loads(line) for line in lines]
        return [r for r in found if name is None or r["event"] == name]

    def close(self) -> None:
        self.tools.recorder.close()


def _gateway(sandbox: Sandbox) -> Gateway:
    return Gateway(sandbox)


def test_a_first_pass_converges_and_the_next_finds_nothing_to_do(sandbox: Sandbox) -> None:
    gw = _gateway(sandbox)
    first = gw.run()
    assert first.outcome is Outcome.CONVERGED
    assert first.ok
    assert first.plan is not None
    assert first.plan.changes
    assert gw.memory.interrupted is False
    assert gw.memory.observations is not None
    second = gw.run()
    assert second.outcome is Outcome.NO_CHANGE
    assert [r["event"] for r in gw.events()].count("pass.succeeded") == 1
    gw.close()


def test_the_audit_records_precede_the_hooks_and_their_log_lines_follow_in_order(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A pass's records are in the audit log when its first hook runs (the hook copies it);
    their log lines, held until then, are all written, in the order of the records."""
    import json

    from structlog.testing import capture_logs

    seen = tmp_path / "audit-as-the-hook-saw-it"
    sandbox.hooks = (
        '[[hooks]]\nname = "copy"\non = ["identity"]\n'
        f'run = ["/bin/sh", "-c", "cat \\"$0\\" > \\"$1\\"", "{sandbox.settings().audit_path}", '
        f'"{seen}"]\n'
    )
    gw = _gateway(sandbox)
    with capture_logs() as logs:
        result = gw.run()
    assert result.outcome is Outcome.CONVERGED
    at_hook = [json.loads(line)["event"] for line in seen.read_text().splitlines()]
    assert "pass.started" in at_hook
    assert at_hook.count("change.applied") == len(result.plan.changes if result.plan else ())
    assert "hook.ran" not in at_hook
    audited = [r["event"] for r in gw.events()]
    logged = [line["event"] for line in logs if line.get("logger") == "reconciler.audit"]
    assert logged == audited
    assert audited[-2:] == ["hook.ran", "pass.succeeded"]
    gw.close()


def test_memory_carries_the_observations_between_undisturbed_passes(sandbox: Sandbox) -> None:
    """Without events every target is looked at again, yet the memory is what the next pass
    starts from: a pass that wrote a target forgets it, so it is never trusted unseen."""
    gw = _gateway(sandbox)
    gw.run()
    observations = gw.memory.observations
    assert observations is not None
    written = {str(sandbox.root / "data" / "cert.pem"), str(sandbox.root / "data" / "key.pem")}
    assert not written & set(observations.found)  # not there when the first pass looked
    assert not written & observations.looked_at  # forgotten: this very pass wrote them
    gw.run()
    after = gw.memory.observations
    assert after is not None
    assert written <= set(after.found)
    assert written <= after.looked_at
    gw.close()


def test_a_pass_with_target_events_reads_only_what_moved_one_without_reads_everything(
    sandbox: Sandbox, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's passes take unchanged inputs and targets as last read; its start and resync
    passes (and `apply`) read every file again, whatever the caches hold."""
    later = lambda: time.time_ns() + 10**10  # noqa: E731 - every file old enough to be kept
    monkeypatch.setattr("reconciler.source.files.now_ns", later)
    monkeypatch.setattr("reconciler.support.fsio.now_ns", later)
    for number in range(100):
        sandbox.state.trust(f"ca-{number:03d}", pki.root.cert_pem)
    gw = _gateway(sandbox)
    assert gw.run().outcome is Outcome.CONVERGED
    assert gw.run(gw.quiet_targets()).outcome is Outcome.NO_CHANGE
    before = read_calls()
    assert gw.run(gw.quiet_targets()).outcome is Outcome.NO_CHANGE
    spared = read_calls() - before
    before = read_calls()
    assert gw.run().outcome is Outcome.NO_CHANGE
    everything = read_calls() - before
    assert spared < 50, spared
    assert everything >= 200, everything
    gw.close()


def test_a_rejected_state_is_recorded_once_while_the_memory_is_kept(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.state.write("gateway.toml", "[console]\ntls_policy = 7\n")
    gw = _gateway(sandbox)
    assert gw.run().outcome is Outcome.REJECTED
    assert gw.run().outcome is Outcome.REJECTED
    assert len(gw.events("state.rejected")) == 1
    gw.memory = PassMemory()  # a new process: reported again
    assert gw.run().outcome is Outcome.REJECTED
    assert len(gw.events("state.rejected")) == 2
    assert records.load_status(gw.settings.var_dir)["last_attempt"]["outcome"] == "rejected"
    gw.close()


def test_a_failing_hook_rolls_back_and_the_scheduler_backs_that_state_off(
    sandbox: Sandbox,
) -> None:
    """The pass returns what happened; the state it names is what the daemon's backoff holds."""
    sandbox.hooks = '[[hooks]]\nname = "reload"\non = ["identity"]\nrun = ["false"]\n'
    before = sandbox.targets()
    gw = _gateway(sandbox)
    first = gw.run()
    assert first.outcome is Outcome.FAILED
    assert first.reason is not None
    assert "reload" in first.reason
    assert sandbox.targets() == before
    names = [r["event"] for r in gw.events()]
    assert names.index("rollback.completed") < names.index("pass.failed")
    state = state_key(first.revision, first.content_digest)
    backoff = Backoff().after_pass(first.outcome, state, 0.0, 300)
    second = gw.run()
    assert second.outcome is Outcome.FAILED
    assert state_key(second.revision, second.content_digest) == state
    backoff = backoff.after_pass(second.outcome, state, 1.0, 300)
    assert backoff.failures == 2
    assert backoff.holds(state, 2.0)
    sandbox.hooks = ""
    gw.settings = sandbox.settings()
    fixed = gw.run()
    assert fixed.outcome is Outcome.CONVERGED
    assert not backoff.after_pass(fixed.outcome, state, 3.0, 300).active
    gw.close()


def test_what_was_reported_is_kept_for_the_current_revision_only(sandbox: Sandbox) -> None:
    """Reported once per rejection while it is current: the memory does not grow with history."""
    gw = _gateway(sandbox)
    for policy in range(7, 17):
        sandbox.state.write("gateway.toml", f"[console]\ntls_policy = {policy}\n")
        assert gw.run().outcome is Outcome.REJECTED
        assert gw.run().outcome is Outcome.REJECTED
    assert len(gw.events("state.rejected")) == 10
    revisions = {key[1] for key in gw.memory.reported}
    assert len(gw.memory.reported) == 1
    assert revisions == {gw.run().revision}
    gw.close()


def test_status_is_written_once_per_pass_from_its_result(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[dict[str, object]] = []
    real = records.record_attempt

    def counted(var_dir: Path, **entry: Any) -> None:
        writes.append(entry)
        real(var_dir, **entry)

    monkeypatch.setattr(records, "record_attempt", counted)
    gw = _gateway(sandbox)
    applied = gw.run()
    assert applied.outcome is Outcome.CONVERGED
    assert applied.plan is not None
    again = gw.run()
    assert [w["outcome"] for w in writes] == [Outcome.CONVERGED, Outcome.NO_CHANGE]
    assert writes[0]["changes"] == len(applied.plan.changes)
    last = records.load_status(gw.settings.var_dir)["last_attempt"]
    assert (last["revision"], last["outcome"]) == (again.revision, "no-change")
    gw.close()


def test_suspended_pending_changes_are_recorded_once_per_distinct_plan(
    sandbox: Sandbox, pki: Pki
) -> None:
    gw = _gateway(sandbox)
    records.suspend(gw.settings.var_dir, "maintenance")
    first = gw.run()
    assert first.outcome is Outcome.SUSPENDED
    gw.run()
    notices = [r for r in gw.events("warning") if r.get("suspended") is True]
    assert len(notices) == 1
    assert notices[0]["pending"]
    assert notices[0]["drift"] == []
    sandbox.state.trust("another-ca", pki.root.cert_pem)
    gw.run()
    assert len([r for r in gw.events("warning") if r.get("suspended") is True]) == 2
    assert sandbox.targets() == {}  # nothing applied while suspended
    gw.close()


def test_an_interrupted_pass_is_recovered_before_the_next_and_reported(sandbox: Sandbox) -> None:
    """A journal left in phase `prepared` (a crash before every file was in place) is undone by
    the next call; with nothing else to do, the call's result is that failed recovery."""
    gw = _gateway(sandbox)
    assert gw.run().ok
    sandbox.state.trust("extra", sandbox.state.path.joinpath("trust/partner-ca.pem").read_bytes())
    settings = gw.settings
    from reconciler.reconcile.planning import make_plan
    from reconciler.txn.transaction import Transaction

    planned = make_plan(settings)
    assert planned.plan is not None
    assert planned.plan.changes
    Transaction.prepare(settings.var_dir, planned.plan)  # then "crash"
    sandbox.state.remove("trust/extra.pem")  # the desired state is back to what is applied
    result = gw.run()
    assert result.outcome is Outcome.FAILED
    assert result.reason is not None
    assert "undone" in result.reason
    recovery = gw.events("recovery.completed")
    assert [r["action"] for r in recovery] == ["undone"]
    assert gw.run().outcome is Outcome.NO_CHANGE
    gw.close()
