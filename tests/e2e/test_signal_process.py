"""hooks/signal-process against real processes: a real nginx master, a supervised service, users."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers.hook_scripts import (
    HOOKS,
    assert_untouched,
    bad_pid_files,
    decoys,
    kill_tree,
    listener_on,
    run_hook,
    run_hook_bounded,
    write_identity,
)
from tests.helpers.net import free_port
from tests.helpers.nginx import NginxServer
from tests.helpers.state import Pki
from tests.helpers.tls import leaf_fingerprint, pem_fingerprint
from tests.helpers.waiting import wait_for

HOOK = str(HOOKS / "signal-process")


def signal_process(*args: str) -> subprocess.CompletedProcess[str]:
    return run_hook(HOOK, *args)


def test_nginx_reload_by_pid_file_waits_for_new_workers(nginx: NginxServer, pki: Pki) -> None:
    old_workers = nginx.workers()
    write_identity(nginx.root, pki.leaf2, pki)
    result = signal_process("--pidfile", str(nginx.pid_path), "--expect", "new-children")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent SIGHUP to process of pid file" in result.stdout
    assert "is back: new children of pid" in result.stdout
    assert nginx.workers() - old_workers
    # The old workers stop accepting when the master tells them to, just after starting the new.
    new = pem_fingerprint(pki.leaf2.cert_pem)
    wait_for(lambda: leaf_fingerprint(nginx.address) == new, "the new workers to serve")


def test_nginx_that_refuses_the_configuration_is_reported(nginx: NginxServer, pki: Pki) -> None:
    nginx.ssl_conf.write_text("ssl_certificate_key /nonexistent/key.pem;\n")
    result = signal_process(
        "--pidfile", str(nginx.pid_path), "--expect", "new-children", "--wait-s", "2"
    )
    assert result.returncode == 1
    assert "not back within 2 s (new-children): no new child process of pid" in result.stdout
    assert leaf_fingerprint(nginx.address) == pem_fingerprint(pki.leaf.cert_pem), "old config"


def test_term_by_name_waits_for_the_restarted_process(supervised: tuple[int, str]) -> None:
    port, name = supervised
    old = listener_on(port, name)
    assert old is not None
    result = signal_process("--name", name, "--signal", "TERM", "--port", str(port))
    assert result.returncode == 0, result.stdout + result.stderr
    new = listener_on(port, name)
    assert new is not None
    assert new.pid != old.pid
    assert f"is back: new pid {new.pid} listening on {port}" in result.stdout


def test_hup_by_name_keeps_the_same_process_listening(supervised: tuple[int, str]) -> None:
    port, name = supervised
    old = listener_on(port, name)
    result = signal_process("--name", name, "--port", str(port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent SIGHUP" in result.stdout
    assert listener_on(port, name) == old


def test_a_process_that_does_not_come_back_fails_in_time(service_script: Path) -> None:
    port, name = free_port(), service_script.name
    proc = subprocess.Popen([sys.executable, str(service_script), str(port)])
    try:
        wait_for(lambda: listener_on(port, name), "the service to listen")
        result = signal_process("--name", name, "--signal", "TERM", "--wait-s", "1")
    finally:
        kill_tree(proc)
    assert result.returncode == 1
    assert f"named '{name}' not back within 1 s (new): no new process" in result.stdout


# A master that forks a worker under its own name, and on SIGHUP forks a new one and ends the old
# (nginx's reload, in small); with "refuse" in its argv it ignores SIGHUP, like a refused reload.
MASTER = """\
import os, signal, sys, time
def work():
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        time.sleep(60)
def spawn():
    pid = os.fork()
    if pid == 0:
        work()
    return pid
worker = [spawn()]
def reload(*_):
    old, worker[0] = worker[0], spawn()
    os.kill(old, signal.SIGTERM)
    os.waitpid(old, 0)
if "refuse" not in sys.argv:
    signal.signal(signal.SIGHUP, reload)
else:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda *_: (os.kill(worker[0], signal.SIGKILL), sys.exit(0)))
while True:
    time.sleep(60)
"""


@pytest.fixture
def master(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    script = tmp_path / f"gateway-master-{os.getpid()}-{free_port()}"
    script.write_text(MASTER)
    started: list[subprocess.Popen[bytes]] = []
    yield script, started
    for proc in started:
        kill_tree(proc)


def _start_master(master: tuple[Path, list[subprocess.Popen[bytes]]], *args: str) -> psutil.Process:
    script, started = master
    proc = subprocess.Popen([sys.executable, str(script), *args])
    started.append(proc)
    process = psutil.Process(proc.pid)
    wait_for(process.children, "the master's first worker")
    return process


def test_by_name_only_the_topmost_process_is_signalled(
    master: tuple[Path, list[subprocess.Popen[bytes]]],
) -> None:
    process = _start_master(master)
    old_worker = process.children()[0]
    result = signal_process("--name", master[0].name, "--expect", "new-children")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"sent SIGHUP to process named '{master[0].name}' (pid {process.pid})" in result.stdout
    assert [c.pid for c in process.children()] != [old_worker.pid]


def test_a_master_that_ignores_the_reload_is_reported(
    master: tuple[Path, list[subprocess.Popen[bytes]]],
) -> None:
    process = _start_master(master, "refuse")
    result = signal_process("--name", master[0].name, "--expect", "new-children", "--wait-s", "1")
    assert result.returncode == 1
    assert f"no new child process of pid {process.pid}" in result.stdout
    assert process.is_running()


def test_missing_targets_fail_with_a_reason(tmp_path: Path) -> None:
    result = signal_process("--name", "no-such-process-xyz")
    assert result.returncode == 1
    assert "no process named 'no-such-process-xyz'; nothing to signal" in result.stdout

    pidfile = tmp_path / "gone.pid"
    result = signal_process("--pidfile", str(pidfile))
    assert result.returncode == 1
    assert f"cannot read pid file {pidfile}" in result.stdout

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    result = signal_process("--pidfile", str(pidfile))
    assert result.returncode == 1
    assert f"names pid {dead.pid}, which does not run" in result.stdout

    assert signal_process("--name", "x", "--signal", "NOPE").returncode == 2


@pytest.fixture
def nobodys_sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process of another user (nobody), as the gateway's container would run."""
    proc = subprocess.Popen(["sleep", "600"], user=65534, group=65534)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_another_users_process_cannot_be_signalled(
    tmp_path: Path, nobodys_sleeper: subprocess.Popen[bytes]
) -> None:
    """Without CAP_KILL (the manifests drop every capability) only the same user's processes
    can be signalled: the hook says so instead of failing obscurely."""
    pidfile = tmp_path / "gateway.pid"
    pidfile.write_text(str(nobodys_sleeper.pid))
    result = subprocess.run(
        ["setpriv", "--bounding-set=-kill", "--", sys.executable, HOOK, "--pidfile", str(pidfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"not allowed to signal process of pid file {pidfile} (pid {nobodys_sleeper.pid})" in (
        result.stdout
    )
    assert nobodys_sleeper.poll() is None


def test_by_name_programs_that_only_name_the_process_are_left_alone(tmp_path: Path) -> None:
    name = "gateway-app-test"
    with decoys(tmp_path, name) as started:
        result = signal_process("--name", name, "--signal", "TERM", "--wait-s", "1")
        assert result.returncode == 1
        assert f"no process named {name!r}; nothing to signal" in result.stdout
        assert_untouched(started)


def test_a_pid_file_that_is_not_one_is_refused_unread(tmp_path: Path) -> None:
    for pid_file, why in bad_pid_files(tmp_path):
        result = run_hook_bounded(HOOK, "--pidfile", str(pid_file))
        assert result.returncode == 1, (pid_file, result.stdout + result.stderr)
        assert f"cannot read pid file {pid_file}" in result.stdout
        assert why in result.stdout, result.stdout + result.stderr
