"""Readiness means serving: /readyz, metrics and `status` after rejected, failed, suspended passes.

A sidecar's readinessProbe on /readyz takes the whole pod out of its Service when it fails, so it
must fail only while no verified configuration is in place; a bad push, a rolled-back pass or a
suspension leave the last good configuration serving and show in the metrics and `status`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs
from structlog.typing import EventDict

from reconciler.core.outcome import Outcome
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.readiness import decide, from_status
from reconciler.daemon.service import PassReporter, Services, SystemdNotifier
from reconciler.reconcile.runner import PassResult
from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.net import free_port, http_get
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki


@pytest.mark.parametrize(
    ("outcome", "applied", "ready", "words"),
    [
        (None, None, False, "no pass has finished yet"),
        ("converged", None, True, "converged at revision r2"),
        ("no-change", "r1", True, "no-change at revision r2"),
        ("rejected", "r1", True, "serving revision r1; last pass rejected at revision r2: bad"),
        ("failed", "r1", True, "serving revision r1; last pass failed at revision r2: bad"),
        ("suspended", "r1", True, "serving revision r1; last pass suspended at revision r2"),
        ("deferred", "r1", True, "serving revision r1; last pass deferred"),
        ("rejected", None, False, "no verified configuration in place yet; last pass rejected"),
        ("failed", None, False, "no verified configuration in place yet; last pass failed"),
    ],
)
def test_ready_while_a_verified_configuration_is_in_place(
    outcome: str | None, applied: str | None, ready: bool, words: str
) -> None:
    decided = decide(outcome, "r2" if outcome else None, "bad", applied)
    assert decided.ready is ready
    assert decided.reason.startswith(words)


def test_status_record_gives_the_same_answer() -> None:
    saved = {
        "last_attempt": {"revision": "r2", "outcome": "rejected", "reason": "gateway.toml: x"},
        "last_applied": {"revision": "r1", "time": "2026-01-01T00:00:00Z"},
    }
    assert from_status(saved) == decide("rejected", "r2", "gateway.toml: x", "r1")
    assert not from_status({}).ready
    assert not from_status({"last_attempt": saved["last_attempt"]}).ready


def test_long_reasons_are_cut_for_the_probe_body() -> None:
    reason = decide("rejected", "r2", "x" * 5000, "r1").reason
    assert len(reason) < 400
    assert reason.endswith("...")


# -- the daemon ---------------------------------------------------------------------------------


def _metric(base: str, name: str) -> float:
    for line in http_get(f"{base}/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _with_metrics(sandbox: Sandbox) -> str:
    port = free_port()
    sandbox.extra = f'metrics_address = "127.0.0.1:{port}"\n'
    return f"http://127.0.0.1:{port}"


def _status(sandbox: Sandbox, expect: int) -> dict[str, object]:
    """`status --json`, which exits with its check's code: 3 rejected, 5 not serving."""
    done = sandbox.run("status", "--json")
    assert done.returncode == expect, done.stderr + done.stdout
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_rejected_push_keeps_ready_and_shows_in_metrics_and_status(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    base = _with_metrics(sandbox)
    daemon = start_daemon()
    assert http_get(f"{base}/readyz")[0] == 200
    good = daemon.passes()[-1]["revision"]

    sandbox.state.write("gateway.toml", "[nonsense]\n")
    wait_for(lambda: daemon.passes(outcome="rejected"), "the rejection", daemon)
    code, body = http_get(f"{base}/readyz")
    assert code == 200
    assert body.startswith(f"serving revision {good}; last pass rejected at revision ")
    assert _metric(base, "reconciler_ready") == 1.0
    assert _metric(base, "reconciler_last_pass_ok") == 0.0
    assert _metric(base, "reconciler_rejected_states_total") == 1.0
    status = _status(sandbox, 3)
    assert status["ready"] == {"ready": True, "reason": body.strip()}
    assert sandbox.run("status").stdout.count("ready           yes: serving revision") == 1
    assert daemon.stop() == 0


def test_rolled_back_pass_keeps_ready(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    base = _with_metrics(sandbox)
    fail_marker = sandbox.base / "fail-next"
    script = sandbox.base / "maybe-fail.py"
    script.write_text(f"import os, sys\nsys.exit(1 if os.path.exists({str(fail_marker)!r}) else 0)")
    sandbox.hooks = (
        f'[[hooks]]\nname = "reload"\non = ["identity"]\n'
        f'run = ["{sys.executable}", "{script}"]\ntimeout_s = 10\n'
    )
    daemon = start_daemon()
    served = (sandbox.root / "data" / "cert.pem").read_bytes()
    fail_marker.write_text("")
    sandbox.state.identity(pki, pki.leaf2)
    wait_for(lambda: daemon.passes(outcome="failed"), "the failed pass", daemon)
    assert (sandbox.root / "data" / "cert.pem").read_bytes() == served, "rolled back"
    code, body = http_get(f"{base}/readyz")
    assert (code, "last pass failed at revision" in body) == (200, True)
    assert _metric(base, "reconciler_ready") == 1.0
    assert _metric(base, "reconciler_last_pass_ok") == 0.0
    assert daemon.stop() == 0


def test_suspension_keeps_ready(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    base = _with_metrics(sandbox)
    daemon = start_daemon()
    sandbox.run("suspend", "--reason", "maintenance", check=True)
    sandbox.state.identity(pki, pki.leaf2)
    wait_for(lambda: daemon.passes(outcome="suspended"), "the suspended pass", daemon)
    code, body = http_get(f"{base}/readyz")
    assert (code, "last pass suspended at revision" in body) == (200, True)
    assert _metric(base, "reconciler_suspended") == 1.0
    assert _metric(base, "reconciler_ready") == 1.0
    assert "SUSPENDED" in sandbox.run("status").stdout
    assert daemon.stop() == 0


def test_not_ready_until_a_first_state_is_verified(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    base = _with_metrics(sandbox)
    good = (sandbox.state.path / "gateway.toml").read_text()
    sandbox.state.write("gateway.toml", "[nonsense]\n")
    daemon = start_daemon()
    code, body = http_get(f"{base}/readyz")
    assert code == 503
    assert body.startswith("no verified configuration in place yet; last pass rejected")
    assert _metric(base, "reconciler_ready") == 0.0
    assert _status(sandbox, 5)["ready"] == {"ready": False, "reason": body.strip()}

    sandbox.state.write("gateway.toml", good)
    wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, "/readyz to turn 200", daemon)
    assert _metric(base, "reconciler_ready") == 1.0
    assert daemon.stop() == 0


def test_a_pass_shows_in_metrics_then_readyz_then_the_log(sandbox: Sandbox) -> None:
    """Whoever waits for one of them (a probe on /readyz, a test or an operator on the log line)
    finds the pass in those set before it: the gauges, then readiness, then the log."""
    services = Services(SystemdNotifier({}), lambda: True, lambda: (True, ""))
    reporter = PassReporter(services)
    seen: list[tuple[str, bool, bool]] = []

    def snapshot(stage: str) -> None:
        gauges = services.metrics.render() if services.metrics is not None else b""
        seen.append((stage, reporter.readiness.ready, b"\nreconciler_ready 1.0\n" in gauges))

    class Counting(Metrics):
        def observe_pass(self, *args: Any, **kwargs: Any) -> None:
            snapshot("metrics")
            super().observe_pass(*args, **kwargs)

    def logged(_logger: object, _name: str, event: EventDict) -> EventDict:
        snapshot(str(event["event"]))
        return event

    services.metrics = Counting([])
    with capture_logs(processors=[logged]):
        reporter.report(PassResult(Outcome.CONVERGED, "rev-1"), "start", 0.01, sandbox.settings())
    assert seen == [("metrics", False, False), ("pass.finished", True, True)]
