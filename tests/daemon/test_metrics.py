"""Metrics made for alerting: labels there from the start, info series, pending work, expiry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from reconciler.audit.witness import Head, read_head
from reconciler.core.outcome import Outcome
from reconciler.core.plan import Change, Plan
from reconciler.daemon.metrics import CertExpiry, Metrics
from reconciler.hooks.runner import HookResult
from reconciler.reconcile.runner import PassResult
from reconciler.version import version
from tests.helpers.daemon import Daemon
from tests.helpers.net import free_port, http_get
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki
from tests.helpers.waiting import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics.render().decode()).get((name, tuple(sorted(labels.items()))))


def _change(kind: Any, action: Any = "update", cause: Any = "desired") -> Change:
    return Change(kind, f"/r/{kind}", action, None, "ab" * 32, 0o644, cause)


def test_every_outcome_kind_and_hook_is_there_at_zero_from_the_start() -> None:
    metrics = Metrics(["reload-console"])
    text = metrics.render().decode()
    for outcome in ("converged", "no-change", "rejected", "failed", "suspended", "deferred"):
        assert value(metrics, "reconciler_passes_total", outcome=outcome) == 0
    for kind in ("identity", "console", "smtp_inbound", "trust", "profiles"):
        assert value(metrics, "reconciler_drift_corrections_total", kind=kind) == 0
        for action in ("create", "update", "delete"):
            assert value(metrics, "reconciler_changes_total", kind=kind, action=action) == 0
    assert value(metrics, "reconciler_hook_failures_total", hook="reload-console") == 0
    assert value(metrics, "reconciler_hook_duration_seconds_count", hook="reload-console") == 0
    assert "_created" not in text
    for absent in (
        "reconciler_probe_timestamp_seconds",
        "reconciler_last_rejected_timestamp_seconds",
        "reconciler_identity_expiry_timestamp_seconds",
        "reconciler_trust_expiry_timestamp_seconds",
        "reconciler_applied_revision_info",
    ):
        assert not [k for k in samples(text) if k[0] == absent], absent
    info = [k for k in samples(text) if k[0] == "reconciler_build_info"]
    assert len(info) == 1
    assert dict(info[0][1])["version"] == version()


def test_revisions_pending_work_and_failures_follow_the_passes() -> None:
    metrics = Metrics(["reload"], applied_revision="rev-0")
    assert value(metrics, "reconciler_applied_revision_info", revision="rev-0") == 1
    drifted = Plan("rev-1", (_change("console", cause="drift"), _change("trust", "create")))
    failed_hook = HookResult("reload", "run", "apply", 1, 20, "boom")
    metrics.observe_pass(
        PassResult(Outcome.FAILED, "rev-1", drifted, hooks=(failed_hook,)), 1, 100, suspended=False
    )
    assert value(metrics, "reconciler_pending_changes") == 2
    assert value(metrics, "reconciler_pending_drift") == 1
    assert value(metrics, "reconciler_consecutive_failures") == 1
    assert value(metrics, "reconciler_hook_failures_total", hook="reload") == 1
    assert value(metrics, "reconciler_desired_revision_info", revision="rev-1") == 1
    assert value(metrics, "reconciler_applied_revision_info", revision="rev-0") == 1

    rejected = PassResult(Outcome.REJECTED, "rev-2", reason="gateway.toml: bad")
    metrics.observe_pass(rejected, 0.1, 200, suspended=False)
    metrics.observe_pass(rejected, 0.1, 260, suspended=False)
    assert value(metrics, "reconciler_consecutive_failures") == 1, "a rejection is no failure"
    assert value(metrics, "reconciler_state_rejected") == 1
    assert value(metrics, "reconciler_last_rejected_timestamp_seconds") == 200, "first seen"
    assert value(metrics, "reconciler_pending_changes") == 2, "unknown while rejected: kept"
    assert value(metrics, "reconciler_desired_revision_info", revision="rev-1") is None

    metrics.observe_pass(PassResult(Outcome.CONVERGED, "rev-3", drifted), 1, 300, suspended=False)
    assert value(metrics, "reconciler_consecutive_failures") == 0
    assert value(metrics, "reconciler_state_rejected") == 0
    assert value(metrics, "reconciler_pending_changes") == 0
    assert value(metrics, "reconciler_pending_drift") == 0
    assert value(metrics, "reconciler_applied_revision_info", revision="rev-3") == 1
    assert value(metrics, "reconciler_applied_revision_info", revision="rev-0") is None
    assert value(metrics, "reconciler_drift_corrections_total", kind="console") == 1
    assert value(metrics, "reconciler_last_rejected_timestamp_seconds") == 200, "history stays"

    suspended = PassResult(Outcome.SUSPENDED, "rev-4", Plan("rev-4", (_change("identity"),)))
    metrics.observe_pass(suspended, 0.1, 400, suspended=True)
    assert value(metrics, "reconciler_pending_changes") == 1
    assert value(metrics, "reconciler_consecutive_failures") == 0, "a suspension is no failure"
    assert value(metrics, "reconciler_suspended") == 1


def test_expiry_is_the_soonest_and_per_entry_series_only_when_asked() -> None:
    entries = [
        CertExpiry("identity", "leaf", "CN=gw", 3000.0),
        CertExpiry("identity", "chain-1", "CN=intermediate", 2000.0),
        *(CertExpiry("trust", f"ca-{i}", f"CN=ca-{i}", 5000.0 + i) for i in range(50)),
    ]
    metrics = Metrics()
    metrics.set_expiry(entries)
    assert value(metrics, "reconciler_identity_expiry_timestamp_seconds") == 2000
    assert value(metrics, "reconciler_trust_expiry_timestamp_seconds") == 5000
    series = [k for k in samples(metrics.render().decode()) if "certificate_expiry" in k[0]]
    assert len(series) == 1, "the leaf only: no series per trust entry"
    metrics.set_expiry([])
    assert "reconciler_trust_expiry_timestamp_seconds" not in metrics.render().decode()

    per_entry = Metrics(per_trust_entry=True)
    per_entry.set_expiry(entries)
    series = [k for k in samples(per_entry.render().decode()) if "certificate_expiry" in k[0]]
    assert len(series) == 51


def test_a_daemon_exports_them_for_real(
    sandbox: Sandbox,
    pki: Pki,
    start_daemon: Callable[..., Daemon],
) -> None:
    port = free_port()
    sandbox.extra = f'metrics_address = "127.0.0.1:{port}"\n'
    flag = sandbox.base / "make-the-hook-fail"
    sandbox.hooks = (
        f'[[hooks]]\nname = "reload"\non = ["profiles"]\nrun = ["test", "!", "-e", "{flag}"]\n'
    )
    daemon = start_daemon()
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> Samples:
        code, text = http_get(url)
        assert code == 200
        return samples(text)

    first = scrape()
    assert first[("reconciler_passes_total", (("outcome", "converged"),))] == 1
    assert first[("reconciler_passes_total", (("outcome", "failed"),))] == 0
    assert first[("reconciler_hook_failures_total", (("hook", "reload"),))] == 0
    chain = (pki.leaf.cert, pki.intermediate.cert)
    soonest = min(c.not_valid_after_utc.timestamp() for c in chain)
    assert first[("reconciler_identity_expiry_timestamp_seconds", ())] == soonest
    applied = [dict(k[1])["revision"] for k in first if k[0] == "reconciler_applied_revision_info"]
    assert len(applied) == 1
    assert applied[0].startswith("sha256:")
    assert not [k for k in first if k[0] == "reconciler_probe_timestamp_seconds"], "probing off"

    # A profile change runs the hook, failing now: the pass rolls back.
    flag.touch()
    sandbox.state.profile("relay", 'url = "smtps://relay2.example.com"\n')

    def failed_hook() -> Samples | None:
        found = scrape()
        return found if found[("reconciler_hook_failures_total", (("hook", "reload"),))] else None

    after = wait_for(failed_hook, "the hook failure counted", detail=daemon.log_text)
    assert after[("reconciler_consecutive_failures", ())] >= 1
    assert after[("reconciler_pending_changes", ())] == 1
    assert [
        dict(k[1])["revision"] for k in after if k[0] == "reconciler_applied_revision_info"
    ] == (applied), "the applied revision is still the first"

    # A rejected push: flagged, with the time it was first seen.
    sandbox.state.write("gateway.toml", "[nonsense]\n")

    def rejection() -> Samples | None:
        found = scrape()
        return found if found.get(("reconciler_state_rejected", ())) == 1 else None

    rejected = wait_for(rejection, "the rejection shown", detail=daemon.log_text)
    assert rejected[("reconciler_last_rejected_timestamp_seconds", ())] > 0
    assert daemon.stop() == 0


def test_the_audit_head_is_one_series_and_witness_failures_count_from_zero() -> None:
    metrics = Metrics()
    assert value(metrics, "reconciler_audit_head_seq") == 0
    assert value(metrics, "reconciler_audit_witness_failures_total") == 0
    heads = [k for k in samples(metrics.render().decode()) if k[0] == "reconciler_audit_head_info"]
    assert heads == [], "absent before the first record"
    metrics.audit.published(Head(41, "a" * 64))
    metrics.audit.published(Head(45, "b" * 64))
    metrics.audit.witness_failed()
    assert value(metrics, "reconciler_audit_head_seq") == 45
    heads = [k for k in samples(metrics.render().decode()) if k[0] == "reconciler_audit_head_info"]
    assert heads == [("reconciler_audit_head_info", (("hash", "b" * 64), ("seq", "45")))]
    assert value(metrics, "reconciler_audit_witness_failures_total") == 1


def test_a_daemon_publishes_its_head_at_start_and_after_each_pass_that_wrote(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    port = free_port()
    sandbox.extra = f'metrics_address = "127.0.0.1:{port}"\n'
    daemon = start_daemon()

    def head_series() -> tuple[int, str] | None:
        code, text = http_get(f"http://127.0.0.1:{port}/metrics")
        found = [dict(k[1]) for k in samples(text) if k[0] == "reconciler_audit_head_info"]
        head = read_head(sandbox.var / "audit.jsonl")
        if code != 200 or not found or head is None:
            return None
        series = (int(found[0]["seq"]), found[0]["hash"])
        return series if series == (head.seq, head.hash) else None

    first = wait_for(head_series, "the first pass's head in /metrics", detail=daemon.log_text)
    logged = daemon.log_events("audit.head")
    assert [(e["seq"], e["hash"]) for e in logged][-1] == first
    sandbox.state.profile("relay", 'url = "smtps://relay2.example.com"\n')
    second = wait_for(
        lambda: (found := head_series()) and found[0] > first[0] and found,
        "the next pass's head",
        detail=daemon.log_text,
    )
    assert (second[0], second[1]) == (
        daemon.audit()[-1]["seq"],
        daemon.audit()[-1]["hash"],
    )
    assert daemon.stop() == 0
    # Restarted on an unchanged state: the head is published at start, and no pass moves it.
    again = start_daemon()
    wait_for(lambda: again.log_events("audit.head"), "the head at start", detail=again.log_text)
    assert [(e["seq"], e["hash"]) for e in again.log_events("audit.head")] == [second]
    assert again.stop() == 0
