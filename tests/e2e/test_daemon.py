"""The daemon as operators run it: a real `reconciler run` process against real directories.

Every test starts its own daemon (quiet period 100 ms), changes the world the way a GitOps tool or
an operator would, and waits (with a deadline) for what the daemon must do: the audit log, the
targets, the hook log, its own JSON log lines. No fixed sleeps stand in for synchronisation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.support import devpki
from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.gitops import LAYOUTS, Files
from tests.helpers.net import free_port, http_get
from tests.helpers.passes import install_record_hook
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import GATEWAY_TOML, Pki, StateDir


def state_files(pki: Pki, leaf: devpki.Issued | None = None, relay: str = "relay") -> Files:
    chosen = leaf or pki.leaf
    return {
        "gateway.toml": GATEWAY_TOML.encode(),
        "tls/cert.pem": pki.chain(chosen),
        "tls/key.pem": chosen.key_pem,
        "trust/partner-ca.pem": pki.other_ca.cert_pem,
        "profiles/relay.toml": f'url = "smtps://{relay}.example.com"\n'.encode(),
    }


def hook_apply_runs(log: Path) -> list[str]:
    """RECONCILER_REVISION of each apply-phase hook run."""
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("apply ")]


# -- GitOps layouts -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout_class", LAYOUTS, ids=[c.name for c in LAYOUTS])
def test_each_gitops_layout_push_is_applied_once(
    layout_class: Any, sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    layout = layout_class(sandbox.base)
    layout.push(state_files(pki))
    sandbox.state = StateDir(layout.state_dir)
    hooks = install_record_hook(sandbox)
    daemon = start_daemon()
    assert daemon.passes(trigger="start")[0]["outcome"] == "converged"
    assert len(hook_apply_runs(hooks)) == 1
    before = len(daemon.passes())

    commit = layout.push(state_files(pki, pki.leaf2))
    new_chain = pki.chain(pki.leaf2)
    cert = sandbox.root / "data" / "cert.pem"
    wait_for(lambda: cert.read_bytes() == new_chain, "the new identity applied", daemon)
    wait_for(lambda: len(hook_apply_runs(hooks)) == 2, "the hook run for the push", daemon)
    daemon.wait_idle_after(before + 1)

    assert daemon.stop() == 0
    runs = hook_apply_runs(hooks)
    assert len(runs) == 2, runs
    if commit is not None:
        assert runs[-1] == commit
    assert not daemon.audit("state.rejected")
    assert sandbox.run("plan").returncode == 0


def test_300_quick_writes_coalesce_into_few_passes(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    hooks = install_record_hook(sandbox)
    daemon = start_daemon()
    relay = sandbox.state.path / "profiles" / "relay.toml"
    for n in range(300):
        relay.write_text(f'url = "smtps://relay-{n}.example.com"\n')
    profiles = sandbox.root / "data" / "server-profiles.json"
    wait_for(lambda: "relay-299.example.com" in profiles.read_text(), "the final write", daemon)
    assert daemon.stop() == 0
    runs = hook_apply_runs(hooks)
    assert 2 <= len(runs) <= 1 + 5, runs
    assert "relay-299.example.com" in profiles.read_text()
    assert sandbox.run("plan").returncode == 0


# -- safety ---------------------------------------------------------------------------------------


def test_bad_push_keeps_last_good_state_and_is_audited_once(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    hooks = install_record_hook(sandbox)
    daemon = start_daemon()
    good = sandbox.targets()

    sandbox.state.write("gateway.toml", GATEWAY_TOML + "\n[console]\nhttps = 'yes'\n")
    wait_for(lambda: daemon.passes(outcome="rejected"), "the rejection", daemon)
    # The same bad content again: another pass, but no second state.rejected record.
    sandbox.state.write("gateway.toml", GATEWAY_TOML + "\n[console]\nhttps = 'yes'\n")
    wait_for(lambda: len(daemon.passes(outcome="rejected")) >= 2, "a second rejected pass", daemon)
    assert len(daemon.audit("state.rejected")) == 1
    assert sandbox.targets() == good
    assert daemon.alive()

    sandbox.state.write("gateway.toml", GATEWAY_TOML)
    sandbox.state.identity(pki, pki.leaf2)
    cert = sandbox.root / "data" / "cert.pem"
    wait_for(lambda: cert.read_bytes() == pki.chain(pki.leaf2), "the good push applied", daemon)
    assert daemon.stop() == 0
    assert len(hook_apply_runs(hooks)) == 2


def test_deleted_state_dir_changes_nothing_and_is_watched_again(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    good = sandbox.targets()
    shutil.rmtree(sandbox.state.path)
    wait_for(lambda: daemon.passes(outcome="rejected"), "a pass over the missing state", daemon)
    assert sandbox.targets() == good
    assert daemon.alive()

    # It comes back (a re-clone): the watch on its parent sees it, the new state is applied.
    state = StateDir(sandbox.state.path)
    state.path.mkdir()
    state.gateway(GATEWAY_TOML)
    state.identity(pki, pki.leaf2)
    state.trust("partner-ca", pki.other_ca.cert_pem)
    cert = sandbox.root / "data" / "cert.pem"
    wait_for(lambda: cert.read_bytes() == pki.chain(pki.leaf2), "the recreated state", daemon)
    assert daemon.stop() == 0


def test_hand_edits_and_deletions_of_targets_are_corrected(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    good = sandbox.targets()
    cert = sandbox.root / "data" / "cert.pem"
    ssl_conf = sandbox.root / "nginx" / "ssl.conf"
    trust = next(sandbox.trust_dir.glob("reconciler-*.crt"))
    with cert.open("ab") as handle:
        handle.write(b"# someone was here\n")
    ssl_conf.unlink()
    trust.unlink()

    def corrected() -> set[str]:
        return {r["path"] for r in daemon.audit("drift.corrected")}

    wanted = {str(cert), str(ssl_conf), str(trust)}
    wait_for(lambda: wanted <= corrected(), "drift.corrected for the three targets", daemon)
    wait_for(lambda: sandbox.targets() == good, "the targets restored", daemon)
    assert daemon.stop() == 0


def test_drift_is_corrected_by_passes_that_look_only_where_events_were(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """After its first two passes the daemon re-examines only targets its watches saw change
    (see test_observe.py): an edit, a chmod and a planted file are each still corrected."""
    daemon = start_daemon()
    daemon.wait_idle_after(1)
    good = sandbox.targets()
    trust = next(sandbox.trust_dir.glob("reconciler-*.crt"))
    cert = sandbox.root / "data" / "cert.pem"
    planted = sandbox.trust_dir / "reconciler-planted.crt"

    def corrected() -> set[str]:
        return {r["path"] for r in daemon.audit("drift.corrected")}

    for path, edit in (
        (trust, lambda: trust.write_bytes(trust.read_bytes() + b"# edited\n")),
        (cert, lambda: cert.chmod(0o600)),
        (planted, lambda: planted.write_bytes(trust.read_bytes())),
    ):
        seen = len(daemon.passes())
        edit()
        wait_for(lambda p=path: str(p) in corrected(), f"drift.corrected for {path.name}", daemon)
        daemon.wait_idle_after(seen + 1)
    assert not planted.exists()
    assert oct(cert.stat().st_mode & 0o777) == oct(0o644)
    assert sandbox.targets() == good
    assert daemon.stop() == 0


def test_a_failed_pass_backs_off_but_a_new_revision_is_tried_at_once(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    flag = sandbox.base / "fail"
    script = sandbox.base / "flaky-hook.sh"
    script.write_text(f'#!/bin/sh\n[ -e "{flag}" ] && exit 3\nexit 0\n')
    script.chmod(0o755)
    sandbox.hooks = (
        '[[hooks]]\nname = "flaky"\non = ["identity", "profiles"]\n'
        f'run = ["{script}"]\ntimeout_s = 10\n'
    )
    daemon = start_daemon()
    flag.touch()
    sandbox.state.identity(pki, pki.leaf2)
    wait_for(lambda: daemon.audit("rollback.completed"), "the failed pass rolled back", daemon)
    # The rollback wrote the targets again: those events must not retry the failing revision.
    flag.unlink()
    sandbox.state.profile("relay", 'url = "smtps://relay-fixed.example.com"\n')
    profiles = sandbox.root / "data" / "server-profiles.json"
    wait_for(lambda: "relay-fixed" in profiles.read_text(), "the new revision applied", daemon)
    assert daemon.stop() == 0
    assert len(daemon.audit("pass.failed")) == 1
    assert daemon.log_events("pass.backoff")


# -- signals, idling, systemd, metrics ----------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signals_exit_0(signum: int, start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon()
    assert daemon.stop(signum) == 0
    assert daemon.log_events("daemon.stopped")


def test_a_converged_daemon_uses_no_cpu_while_idle(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    daemon.wait_idle_after(1)
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    before = cpu_seconds()
    time.sleep(5)  # the measurement window itself, not a wait for an event
    used = cpu_seconds() - before
    assert daemon.alive()
    assert used < 0.05, f"{used:.3f} s of CPU in 5 s idle"
    assert daemon.stop() == 0


def test_systemd_notify_ready_status_watchdog_stopping(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    path = sandbox.base / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(0.2)
        daemon = start_daemon({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}, wait=False)
        messages: list[str] = []

        def received(line: str) -> bool:
            with contextlib.suppress(TimeoutError):
                messages.extend(listener.recv(4096).decode().splitlines())
            return any(m.startswith(line) for m in messages)

        wait_for(lambda: received("READY=1"), "READY=1", daemon)
        wait_for(lambda: received("WATCHDOG=1"), "WATCHDOG=1", daemon)
        status = [m for m in messages if m.startswith("STATUS=")]
        assert status
        assert "converged at revision sha256:" in status[0]
        daemon.process.send_signal(signal.SIGTERM)
        wait_for(lambda: received("STOPPING=1"), "STOPPING=1", daemon)
        assert daemon.process.wait(timeout=30) == 0


def test_metrics_healthz_readyz(sandbox: Sandbox, start_daemon: Callable[..., Daemon]) -> None:
    port = free_port()
    sandbox.extra = f'metrics_address = "127.0.0.1:{port}"\n'
    daemon = start_daemon()
    base = f"http://127.0.0.1:{port}"
    assert http_get(f"{base}/healthz")[0] == 200
    assert http_get(f"{base}/readyz")[0] == 200
    code, text = http_get(f"{base}/metrics")
    assert code == 200
    assert 'reconciler_passes_total{outcome="converged"} 1.0' in text
    assert 'reconciler_changes_total{action="create",kind="identity"} 3.0' in text
    assert 'reconciler_certificate_expiry_timestamp_seconds{kind="identity"' in text
    assert 'kind="trust",name="partner-ca"' not in text  # one series per entry only if asked
    assert "reconciler_trust_expiry_timestamp_seconds " in text
    assert "reconciler_pass_duration_seconds_count" in text

    sandbox.state.write("gateway.toml", "[nonsense]\n")
    wait_for(lambda: daemon.passes(outcome="rejected"), "the rejection", daemon)
    assert http_get(f"{base}/readyz")[0] == 200, "the last good configuration still serves"
    assert "reconciler_rejected_states_total 1.0" in http_get(f"{base}/metrics")[1]
    assert http_get(f"{base}/healthz")[0] == 200
    assert daemon.stop() == 0


def _loaded_pydantic(pid: int) -> bool:
    """Whether the process has pydantic's compiled core mapped (it is never unloaded)."""
    return "pydantic_core" in Path(f"/proc/{pid}/maps").read_text()


def test_sighup_reloads_settings(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon]
) -> None:
    """The new settings apply; as at start, they were checked in a child process, so the
    daemon itself never loads pydantic-settings (several MB it would keep)."""
    old_log = install_record_hook(sandbox)
    daemon = start_daemon()
    assert not _loaded_pydantic(daemon.pid)
    new_log = sandbox.base / "new-hook.log"
    script = sandbox.base / "new-hook.sh"
    script.write_text(f'#!/bin/sh\necho "apply $RECONCILER_REVISION" >> "{new_log}"\n')
    script.chmod(0o755)
    sandbox.hooks = (
        f'[[hooks]]\nname = "new"\non = ["identity"]\nrun = ["{script}"]\ntimeout_s = 10\n'
    )
    sandbox.write_config()
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.log_events("settings.reloaded"), "the reload", daemon)
    wait_for(lambda: daemon.passes(trigger="reload"), "the full pass after the reload", daemon)

    sandbox.state.identity(pki, pki.leaf2)
    wait_for(lambda: hook_apply_runs(new_log), "the new hook to run", daemon)
    assert not _loaded_pydantic(daemon.pid)
    assert daemon.stop() == 0
    assert len(hook_apply_runs(old_log)) == 1


def test_sighup_with_an_audit_log_it_cannot_open_keeps_the_old_settings(
    sandbox: Sandbox, pki: Pki, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    log = install_record_hook(sandbox)
    daemon = start_daemon()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the audit log's directory should be\n")
    sandbox.extra += f'\naudit_log = "{blocker}/audit.jsonl"\n'
    sandbox.write_config()
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.log_events("settings.reload_failed"), "the failed reload", daemon)
    sandbox.state.identity(pki, pki.leaf2)
    wait_for(lambda: len(hook_apply_runs(log)) == 2, "a pass on the old settings", daemon)
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


def test_suspended_daemon_reports_drift_and_changes_nothing(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon()
    assert sandbox.run("suspend", "--reason", "maintenance").returncode == 0
    ssl_conf = sandbox.root / "nginx" / "ssl.conf"
    ssl_conf.unlink()
    # The suspend may bring a suspended pass that sees no drift yet: wait for the one that does.
    warnings = wait_for(
        lambda: [w for w in daemon.audit("warning") if w.get("suspended") and w.get("drift")],
        "a suspended pass reporting the drift",
        daemon,
    )
    # The audit record is written during the pass, its pass.finished log line after it.
    wait_for(lambda: daemon.passes(outcome="suspended"), "the suspended pass's report", daemon)
    assert warnings[0]["drift"] == [str(ssl_conf)]
    assert not ssl_conf.exists()
    assert sandbox.run("resume").returncode == 0
    wait_for(ssl_conf.exists, "ssl.conf restored after resume", daemon)
    assert daemon.stop() == 0


def test_a_daemon_makes_the_trust_links_right_at_its_start(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon]
) -> None:
    """On targets already as wanted, the start looks at the whole trust directory once (rather
    than at the first trust change) and leaves the links `openssl rehash` makes: one deleted
    while no daemon ran is back, with no trust entry changed."""
    assert sandbox.run("apply").returncode == 0
    audit = sandbox.var / "audit.jsonl"
    applied = [line for line in audit.read_text().splitlines() if "change.applied" in line]
    links = {p.name: os.readlink(p) for p in sandbox.trust_dir.iterdir() if p.is_symlink()}
    assert links, "the standard state has trust entries"
    gone = sandbox.trust_dir / sorted(links)[0]
    gone.unlink()
    daemon = start_daemon()
    wait_for(gone.is_symlink, "the deleted hash link made again", daemon)
    again = {p.name: os.readlink(p) for p in sandbox.trust_dir.iterdir() if p.is_symlink()}
    assert again == links
    assert len(daemon.audit("change.applied")) == len(applied), "the daemon changed no target"
    assert daemon.stop() == 0
