"""The shipped example hooks, run as a hook runs them, against real processes and a real nginx."""

from __future__ import annotations

import os
import subprocess
import sys
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

# -- restart-service -----------------------------------------------------------------------------


def restart_service(name: str, port: int, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_hook(str(HOOKS / "restart-service"), name, "--port", str(port), *flags)


def test_restart_service_signals_by_name_and_waits_for_a_new_listening_process(
    supervised: tuple[int, str],
) -> None:
    port, name = supervised
    old = listener_on(port, name)
    assert old is not None
    result = restart_service(name, port, "--no-systemd")
    assert result.returncode == 0, result.stdout + result.stderr
    new = listener_on(port, name)
    assert new is not None
    assert new.pid != old.pid
    assert f"is back as pid {new.pid} listening on port {port}" in result.stdout
    assert not old.is_running() or old.status() == psutil.STATUS_ZOMBIE


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd runs: uses systemctl")
def test_restart_service_without_systemd_uses_psutil_by_itself(supervised: tuple[int, str]) -> None:
    port, name = supervised
    old = listener_on(port, name)
    assert old is not None
    result = restart_service(name, port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent SIGTERM" in result.stdout
    new = listener_on(port, name)
    assert new is not None
    assert new.pid != old.pid


def test_restart_service_fails_clearly_when_nothing_restarts_the_service(
    service_script: Path,
) -> None:
    port, name = free_port(), service_script.name
    proc = subprocess.Popen([sys.executable, str(service_script), str(port)])
    try:
        wait_for(lambda: listener_on(port, name), "the service did not listen")
        result = restart_service(name, port, "--no-systemd", "--wait-s", "1")
    finally:
        kill_tree(proc)
    assert result.returncode == 1
    assert f"'{name}' did not come back within 1 s" in result.stdout
    assert "is a supervisor restarting it?" in result.stdout


def test_restart_service_reload_keeps_the_process(supervised: tuple[int, str]) -> None:
    port, name = supervised
    old = listener_on(port, name)
    assert old is not None
    result = restart_service(name, port, "--reload", "--no-systemd")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent SIGHUP" in result.stdout
    assert listener_on(port, name) == old


def test_restart_service_with_no_such_process_fails() -> None:
    result = run_hook(str(HOOKS / "restart-service"), "no-such-service-xyz", "--no-systemd")
    assert result.returncode == 1
    assert "no process named 'no-such-service-xyz' runs" in result.stdout


# -- nginx-reload ----------------------------------------------------------------------------------


def nginx_args(server: NginxServer) -> list[str]:
    return [
        "--nginx",
        server.binary,
        "--",
        "-q",
        "-p",
        f"{server.prefix}/",
        "-c",
        str(server.conf_path),
    ]


def test_nginx_reload_makes_new_workers_serve_the_new_certificate(
    nginx: NginxServer, pki: Pki
) -> None:
    assert leaf_fingerprint(nginx.address) == pem_fingerprint(pki.leaf.cert_pem)
    old_workers = nginx.workers()
    write_identity(nginx.root, pki.leaf2, pki)

    result = run_hook(str(HOOKS / "nginx-reload"), "--pid-file", str(nginx.pid_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent SIGHUP to nginx master" in result.stdout
    assert nginx.workers() - old_workers
    assert leaf_fingerprint(nginx.address) == pem_fingerprint(pki.leaf2.cert_pem)


def test_nginx_reload_check_runs_nginx_t(nginx: NginxServer) -> None:
    good = run_hook(str(HOOKS / "nginx-reload"), "--check", *nginx_args(nginx))
    assert good.returncode == 0, good.stdout + good.stderr

    nginx.ssl_conf.write_text("ssl_certificate_key;\n")
    bad = run_hook(str(HOOKS / "nginx-reload"), "--check", *nginx_args(nginx))
    assert bad.returncode != 0
    assert "invalid number of arguments" in bad.stderr


def test_nginx_reload_reports_a_configuration_nginx_refused(nginx: NginxServer, pki: Pki) -> None:
    nginx.ssl_conf.write_text("ssl_certificate_key;\n")
    result = run_hook(
        str(HOOKS / "nginx-reload"), "--pid-file", str(nginx.pid_path), "--wait-s", "1"
    )
    assert result.returncode == 1
    assert "still runs its old workers" in result.stdout
    assert "refused the new configuration" in result.stdout
    assert leaf_fingerprint(nginx.address) == pem_fingerprint(pki.leaf.cert_pem)


def test_nginx_reload_refuses_a_pid_file_that_names_another_program(tmp_path: Path) -> None:
    pid_file = tmp_path / "not-nginx.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    result = run_hook(str(HOOKS / "nginx-reload"), "--pid-file", str(pid_file))
    assert result.returncode == 1
    assert f"process {os.getpid()} is not nginx" in result.stdout


def test_example_hooks_say_how_to_use_them() -> None:
    for name in ("nginx-reload", "restart-service", "log-change.sh"):
        text = (HOOKS / name).read_text()
        assert "[[hooks]]" in text, name
        assert os.access(HOOKS / name, os.X_OK), name


@pytest.mark.parametrize("flag", [[], ["--reload"]], ids=["restart", "reload"])
def test_restart_service_leaves_programs_that_only_name_the_service_alone(
    tmp_path: Path, flag: list[str]
) -> None:
    name = "gateway-smtpd-test"
    with decoys(tmp_path, name) as started:
        result = run_hook(
            str(HOOKS / "restart-service"), name, "--no-systemd", "--wait-s", "1", *flag
        )
        assert result.returncode == 1
        assert f"no process named {name!r} runs" in result.stdout
        assert_untouched(started)


def test_nginx_reload_never_reads_a_pid_file_that_is_not_one(tmp_path: Path) -> None:
    for pid_file, why in bad_pid_files(tmp_path):
        result = run_hook_bounded(str(HOOKS / "nginx-reload"), "--pid-file", str(pid_file))
        assert result.returncode == 1, (pid_file, result.stdout + result.stderr)
        assert why in result.stdout, result.stdout + result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "options", [["-E"], ["-W", "ignore"], ["-X", "dev", "-E"]], ids=["E", "W-arg", "X-arg-E"]
)
def test_restart_service_finds_a_python_service_run_with_interpreter_options(
    service_script: Path, options: list[str]
) -> None:
    """`python3 -E NAME`: -E is no inline code to python (it is to perl), and -W and -X take the
    next word as their argument: the script after them is the service."""
    port, name = free_port(), service_script.name
    proc = subprocess.Popen(
        [sys.executable, *options, str(service_script), str(port)], start_new_session=True
    )
    try:
        wait_for(
            lambda: any(c.laddr.port == port for c in psutil.Process(proc.pid).net_connections()),
            "the service did not listen",
        )
        result = restart_service(name, port, "--no-systemd", "--wait-s", "1")
        assert "no process named" not in result.stdout, result.stdout
        assert f"pid {proc.pid}" in result.stdout, result.stdout
        assert proc.wait(timeout=30) is not None  # the hook's SIGTERM ended it
    finally:
        kill_tree(proc)
