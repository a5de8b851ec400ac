"""systemd notify, the watchdog pinger, Prometheus metrics and the health endpoints, for real."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.outcome import Outcome
from reconciler.core.plan import Change, Plan
from reconciler.daemon.http import HealthServer
from reconciler.daemon.service import (
    Metrics,
    SystemdNotifier,
    WatchdogPinger,
    applied_expiry,
)
from reconciler.hooks.runner import HookResult
from reconciler.reconcile.runner import PassResult
from tests.helpers import REPO
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki
from tests.helpers.waiting import wait_for

UNIT = REPO / "systemd" / "reconciler.service"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


# -- systemd notify ---------------------------------------------------------------------------


def test_notify_sends_one_datagram_per_message(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.notify("READY=1", "STATUS=converged at revision abc")
    assert sock.recv(4096) == b"READY=1\nSTATUS=converged at revision abc"
    notifier.close()


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"reconciler-test-{os.getpid()}-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"
        notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.notify("READY=1")
    assert notifier.watchdog_interval_s is None


def test_a_vanished_socket_costs_a_false_not_an_exception(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not notifier.notify("READY=1")
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
    ids=["usec", "our-pid", "other-pid", "garbage", "zero", "unset"],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], expected: float | None
) -> None:
    assert SystemdNotifier(env).watchdog_interval_s == expected


def test_pinger_pings_while_healthy_and_withholds_when_stuck(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    healthy = threading.Event()
    healthy.set()
    asked: list[bool] = []

    def ask() -> bool:
        asked.append(healthy.is_set())
        return healthy.is_set()

    pinger = WatchdogPinger(notifier, 0.01, ask)
    pinger.start()
    try:
        assert sock.recv(4096) == b"WATCHDOG=1"
        healthy.clear()
        # Drain pings sent before the loop turned unhealthy, then see that none follow.
        wait_for(lambda: asked.count(False) >= 3, "three unhealthy checks")
        sock.setblocking(False)
        received = []
        while True:
            try:
                received.append(sock.recv(4096))
            except BlockingIOError:
                break
        pings_before = len(received)
        count = asked.count(False)
        wait_for(lambda: asked.count(False) >= count + 3, "three more unhealthy checks")
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
        assert pings_before <= asked.count(True)
    finally:
        pinger.stop()
        notifier.close()


# -- metrics ----------------------------------------------------------------------------------


def _change(kind: Any, path: str, action: Any, cause: Any = "desired") -> Change:
    return Change(kind, path, action, None, "ab" * 32, 0o644, cause)


def test_metrics_count_passes_changes_drift_hooks_and_rejections() -> None:
    metrics = Metrics()
    plan = Plan(
        "rev-1",
        (
            _change("identity", "/r/data/cert.pem", "create"),
            _change("console", "/r/nginx/ssl.conf", "update", "drift"),
        ),
    )
    hook = HookResult("reload", "run", "apply", 0, 1500, "")
    metrics.observe_pass(
        PassResult(Outcome.CONVERGED, "rev-1", plan, hooks=(hook,)), 2.0, 1000.0, suspended=False
    )
    rejected = PassResult(Outcome.REJECTED, "rev-2", reason="gateway.toml: bad")
    metrics.observe_pass(rejected, 0.01, 1001.0, suspended=False)
    metrics.observe_pass(rejected, 0.01, 1002.0, suspended=True)
    text = metrics.render().decode()
    assert 'reconciler_passes_total{outcome="converged"} 1.0' in text
    assert 'reconciler_passes_total{outcome="rejected"} 2.0' in text
    assert 'reconciler_changes_total{action="create",kind="identity"} 1.0' in text
    assert 'reconciler_drift_corrections_total{kind="console"} 1.0' in text
    assert "reconciler_rejected_states_total 1.0" in text, "one distinct rejected state"
    assert 'reconciler_hook_duration_seconds_count{hook="reload"} 1.0' in text
    assert "reconciler_pass_duration_seconds_count 3.0" in text
    assert "reconciler_ready 0.0" in text
    assert "reconciler_suspended 1.0" in text
    assert "reconciler_last_success_timestamp_seconds 1000.0" in text


def test_applied_expiry_reads_the_leaf_and_managed_trust_files(sandbox: Sandbox, pki: Pki) -> None:
    settings = sandbox.settings()
    (sandbox.root / "data" / "cert.pem").write_bytes(pki.chain())
    (sandbox.trust_dir / "reconciler-partner.crt").write_bytes(pki.other_ca.cert_pem)
    (sandbox.trust_dir / "someone-else.crt").write_bytes(pki.root.cert_pem)
    found = {(e.kind, e.name): e for e in applied_expiry(settings)}
    assert set(found) == {("identity", "leaf"), ("identity", "chain-1"), ("trust", "partner")}
    leaf = found[("identity", "leaf")]
    assert "gateway.test" in leaf.subject
    assert leaf.not_after == pki.leaf.cert.not_valid_after_utc.timestamp()
    metrics = Metrics(per_trust_entry=True)
    metrics.set_expiry(found.values())
    assert 'reconciler_certificate_expiry_timestamp_seconds{kind="trust",name="partner"' in (
        metrics.render().decode()
    )


def test_applied_expiry_without_targets_is_empty(sandbox: Sandbox) -> None:
    assert applied_expiry(sandbox.settings()) == []


# -- endpoints --------------------------------------------------------------------------------


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_health_server_answers_metrics_healthz_readyz() -> None:
    metrics = Metrics()
    state = {"alive": True, "ready": (False, "no pass has finished yet")}
    server = HealthServer(
        "127.0.0.1:0",
        metrics,
        lambda: bool(state["alive"]),
        lambda: state["ready"],  # type: ignore[return-value]
    )
    server.start()
    base = "http://{}:{}".format(*server.address)
    try:
        code, body, kind = _get(f"{base}/metrics")
        assert code == 200
        assert kind.startswith("text/plain")
        assert b"reconciler_passes_total" in body
        assert _get(f"{base}/healthz")[0] == 200
        code, body, _ = _get(f"{base}/readyz")
        assert (code, body) == (503, b"no pass has finished yet\n")
        state["ready"] = (True, "converged at revision abc")
        assert _get(f"{base}/readyz")[0] == 200
        state["alive"] = False
        assert _get(f"{base}/healthz")[0] == 503
        assert _get(f"{base}/nothing")[0] == 404
    finally:
        server.close()
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=1).close()


# -- the unit ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_exposure_is_at_most_2_0() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


def test_unit_is_type_notify_with_the_writable_paths() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=reconciler",
        "ReadWritePaths=/opt/gateway\n",
        "ReadWritePaths=-/usr/local/share/ca-certificates -/etc/ssl/certs\n",
        "SystemCallFilter=@chown\n",
    ):
        assert line in text


def test_a_full_notify_queue_never_blocks_the_caller(tmp_path: Path) -> None:
    """Nobody reads the socket: after the queue fills, notify returns False instead of hanging."""
    path = tmp_path / "unread.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        try:
            results = [notifier.notify(f"STATUS=message {n}") for n in range(5000)]
        finally:
            notifier.close()
    assert results[0] is True
    assert results[-1] is False


def test_a_daemon_without_metrics_loads_no_http_server_or_psutil() -> None:
    """The HTTP endpoints and psutil (only for killing a timed-out hook) stay out of an idle
    daemon's memory unless used: the idle RSS target is 60 MB."""
    script = (
        "import sys\n"
        "import reconciler.daemon.loop, reconciler.daemon.service\n"
        "import reconciler.hooks.runner, reconciler.reconcile.runner\n"
        "print(sorted({'http.server', 'psutil'} & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
