"""The HTTP endpoints under attack: bounded connections, bounded time, passes untouched."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from reconciler.daemon.http import HealthServer
from reconciler.daemon.metrics import Metrics
from tests.helpers import REPO
from tests.helpers.daemon import Daemon
from tests.helpers.net import free_port, http_get
from tests.helpers.sandbox import Sandbox
from tests.helpers.waiting import wait_for

FLOOD = 300
# The bounds docs/metrics.md promises.
MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 5.0


@pytest.fixture
def server() -> Iterator[HealthServer]:
    running = HealthServer("127.0.0.1:0", Metrics(), lambda: True, lambda: (True, "ready"))
    running.start()
    yield running
    running.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def idle_connections(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that never send a byte (closed on the way out)."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):  # a full backlog refuses: a flood does that too
                opened.append(socket.create_connection(address, timeout=5))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_a_flood_of_idle_connections_holds_a_bounded_number_of_descriptors(
    server: HealthServer,
) -> None:
    before = _open_fds()
    with idle_connections(server.address, FLOOD) as flood:
        assert len(flood) > 2 * MAX_CONNECTIONS
        # The newest connections are accepted (closing the oldest) as they come.
        url = "http://{}:{}/healthz".format(*server.address)
        assert http_get(url) == (200, "ok\n")
        held_by_server = _open_fds() - before - len(flood)
        assert held_by_server <= MAX_CONNECTIONS + 1, held_by_server


def test_a_slow_request_is_cut_off_after_the_time_limit(server: HealthServer) -> None:
    with socket.create_connection(server.address, timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        # One header byte a second: each arrives well within a per-read timeout.
        while time.monotonic() - started < 3 * REQUEST_TIMEOUT_S:
            try:
                sock.sendall(b"X")
                sock.settimeout(1)
                closed = sock.recv(1024) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
        assert closed
        assert time.monotonic() - started < REQUEST_TIMEOUT_S + 3


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        (b"POST /healthz HTTP/1.1\r\n\r\n", b"405"),
        (b"GET /healthz HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n\r\n", b"431"),
        (b"nonsense\r\n\r\n", b"400"),
    ],
    ids=["get", "post", "huge", "garbage"],
)
def test_each_connection_gets_one_answer_and_is_closed(
    server: HealthServer, request_bytes: bytes, status: bytes
) -> None:
    with socket.create_connection(server.address, timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close before a huge request is sent
            sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.split(b" ", 2)[1] == status
    assert b"Connection: close" in answer


def _daemon_with_few_descriptors(sandbox: Sandbox, port: int) -> Daemon:
    """`reconciler run` as the issue ran it: `ulimit -n 256`, metrics on 127.0.0.1."""
    sandbox.extra = f'quiet_period_ms = 100\nmetrics_address = "127.0.0.1:{port}"\n'
    config = sandbox.write_config()
    log_path = sandbox.base / "daemon.log"
    env = {**os.environ, "RECONCILER_CONFIG": str(config)}
    argv = ["prlimit", "--nofile=256:256", "--", sys.executable, "-m", "reconciler", "run"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=log)
    daemon = Daemon(sandbox, process, log_path)
    daemon.wait_started()
    return daemon


def test_a_flood_of_the_port_never_stops_a_pass_or_the_probes(sandbox: Sandbox) -> None:
    port = free_port()
    daemon = _daemon_with_few_descriptors(sandbox, port)
    try:
        with idle_connections(("127.0.0.1", port), FLOOD):
            assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
            sandbox.state.profile("flooded", 'url = "smtps://flooded.example.com"\n')
            profiles = sandbox.root / "data" / "server-profiles.json"
            wait_for(lambda: "flooded" in profiles.read_text(), "the pass under the flood")
            assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
            fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
            assert fds < 100, fds
        assert daemon.passes(outcome="failed") == []
        assert "Too many open files" not in daemon.log_text()
        assert daemon.stop() == 0
    finally:
        if daemon.alive():
            daemon.process.kill()
            daemon.process.wait()


def test_the_unit_sets_its_descriptor_limit() -> None:
    unit = (REPO / "systemd" / "reconciler.service").read_text()
    assert any(line.startswith("LimitNOFILE=") for line in unit.splitlines())
