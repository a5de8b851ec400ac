"""The README's host installation on a booted Debian 12: install.sh, the unit, the system nginx.

One machine for the module; the tests run in file order, each starting from where the previous
left the host (installed, running, serving), as an operator's session would.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import ssl
from pathlib import Path

import pytest

from reconciler.support import devpki
from tests.helpers.tls import TlsServer, server_context
from tests.helpers.waiting import wait_for
from tests_host.conftest import WHEELHOUSE, Host

pytestmark = pytest.mark.timeout(600)

INSTALL = (
    "cd /src && systemd/install.sh dist/wheelhouse/mailgw_tls_reconciler-*.whl "
    "--wheelhouse dist/wheelhouse"
)
SETTINGS = "/etc/reconciler/reconciler.toml"
HOLD = "/etc/reconciler/hold"
# Blocks while HOLD exists: a pass is caught between writing its files and finishing its hooks.
HOLD_HOOK = f"""
[[hooks]]
name = "hold"
on = ["identity"]
run = ["/bin/sh", "-c", "while [ -e {HOLD} ]; do sleep 0.1; done"]
timeout_s = 300
"""
HOLD_ARGV = f"/bin/sh\0-c\0while [ -e {HOLD} ]".encode()


def served_fingerprint(port: int) -> str | None:
    """SHA-256 of the leaf the console presents over TLS, or None (no TLS yet, refused)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def unit_state(host: Host) -> dict[str, str]:
    return host.machine.show(
        "reconciler", "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts"
    )


def running_with(host: Host, text: str) -> dict[str, str] | None:
    """The unit's state once it is active/running, its last pass converged (or found nothing to
    change) and its STATUS= text contains `text` (a revision, say)."""
    state = unit_state(host)
    ok = state["ActiveState"] == "active" and state["SubState"] == "running"
    good = state["StatusText"].startswith(("converged at revision", "no-change at revision"))
    return state if ok and good and text in state["StatusText"] else None


def journal_tail(host: Host) -> str:
    return host.machine.run("journalctl", "-u", "reconciler", "-n", "40", "-o", "cat").stdout


def audit_records(host: Host) -> list[dict[str, object]]:
    path = host.machine.path("/var/lib/reconciler/audit.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_install_sh_installs_venv_hooks_unit_and_settings(host: Host) -> None:
    machine = host.machine
    out = machine.sh(INSTALL).stdout
    assert "installed reconciler " in out
    version = machine.run("/opt/reconciler/venv/bin/reconciler", "--version").stdout.strip()
    wheel = next(iter(sorted(WHEELHOUSE.glob("mailgw_tls_reconciler-*.whl"))))
    assert version == f"reconciler {wheel.name.split('-')[1]}"
    share = machine.run("/opt/reconciler/venv/bin/reconciler", "--print-share-dir").stdout.strip()
    assert share == "/opt/reconciler/venv/share/reconciler"
    for hook in ("nginx-reload", "restart-service"):
        machine.run("test", "-x", f"/opt/reconciler/hooks/{hook}")
    assert machine.run("systemctl", "is-enabled", "reconciler").stdout.strip() == "enabled"
    assert machine.run("systemctl", "is-active", "reconciler", check=False).stdout.strip() in (
        "inactive",
        "unknown",
    )
    # The unit's Documentation= names a file the installation put there.
    documentation = machine.show("reconciler", "Documentation")["Documentation"].split()
    guides = [url.removeprefix("file://") for url in documentation if url.startswith("file://")]
    assert guides
    for guide in guides:
        assert machine.path(guide).is_file(), guide
    example = machine.path(f"{share}/systemd/reconciler.toml.example").read_text()
    assert machine.path(SETTINGS).read_text() == example


def test_unit_is_ready_after_the_first_pass_and_names_the_revision(host: Host) -> None:
    """The README's last step: edit the settings (nginx hook, verification), start the unit."""
    settings = host.machine.path(SETTINGS)
    text = settings.read_text()
    edits = {
        'state_dir = "/srv/gitops/gateway/current"': 'state_dir = "/srv/gitops/gateway/checkout"',
        'trust_store = "debian"': 'trust_store = "debian"\nfile_group = "www-data"',
        '"127.0.0.1:9465"': f'"127.0.0.1:{host.metrics_port}"',
        'console = "127.0.0.1:443"': f'console = "127.0.0.1:{host.console_port}"',
        '"--port", "25"': f'"--port", "{host.smtp_port}"',
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"the example settings no longer hold {old!r}"
        text = text.replace(old, new)
    settings.write_text(text)
    commit = host.push(host.pki.leaves[0])
    # Type=notify: start returns once the daemon said READY=1, after its first pass.
    host.machine.run("systemctl", "start", "reconciler", timeout=300)
    state = unit_state(host)
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), journal_tail(host)
    assert running_with(host, commit), (state, journal_tail(host))


def test_metrics_and_readiness_answer_on_loopback(host: Host) -> None:
    def get(path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", host.metrics_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    assert get("/readyz")[0] == 200
    status, text = get("/metrics")
    assert status == 200
    assert "reconciler_" in text


def test_system_nginx_serves_the_pushed_identities(host: Host) -> None:
    first, second = host.pki.leaves[0], host.pki.leaves[1]
    assert served_fingerprint(host.console_port) == first.fingerprint
    smtpd_before = host.machine.show("gateway-smtpd", "InvocationID")["InvocationID"]
    commit = host.push(second)
    wait_for(
        lambda: served_fingerprint(host.console_port) == second.fingerprint,
        "nginx to serve the second identity",
        timeout=90,
        detail=lambda: journal_tail(host),
    )
    wait_for(lambda: running_with(host, commit), f"STATUS= naming {commit}", timeout=60)
    # The restart-service hook restarted the SMTP stand-in through systemctl, from the sandbox.
    smtpd_after = host.machine.show("gateway-smtpd", "InvocationID", "ActiveState")
    assert smtpd_after["InvocationID"] != smtpd_before
    assert smtpd_after["ActiveState"] == "active"


def test_debian_store_trusts_the_pushed_ca_inside(host: Host) -> None:
    machine = host.machine
    entry = machine.path("/usr/local/share/ca-certificates/reconciler-partner-ca.crt")
    assert entry.read_bytes().strip() == host.pki.partner_ca.cert_pem.strip()
    bundle = machine.path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    assert host.pki.partner_ca.cert_pem.strip() in bundle
    client = (
        "import socket, ssl, sys\n"
        "context = ssl.create_default_context()\n"
        "raw = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
        "with context.wrap_socket(raw, server_hostname='partner.test') as tls:\n"
        "    print(tls.version())\n"
    )
    trusted = devpki.issue(host.pki.partner_ca, "partner.test", sans=("partner.test",))
    stranger_ca = devpki.make_ca("Not In Any Store CA")
    untrusted = devpki.issue(stranger_ca, "partner.test", sans=("partner.test",))
    with TlsServer(server_context(trusted.cert_pem, trusted.key_pem)) as server:
        result = machine.run("python3", "-c", client, str(server.port), check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("TLSv1.")
    with TlsServer(server_context(untrusted.cert_pem, untrusted.key_pem)) as server:
        result = machine.run("python3", "-c", client, str(server.port), check=False)
        assert result.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_file_group_is_applied(host: Host) -> None:
    for name in ("key.pem", "cert.pem", "tls.pem"):
        group, mode = host.machine.run(
            "stat", "-c", "%G %a", f"/opt/gateway/data/{name}"
        ).stdout.split()
        assert group == "www-data", name
        assert mode == ("644" if name == "cert.pem" else "600"), name


def test_sighup_reloads_the_settings(host: Host) -> None:
    """`systemctl reload` sends SIGHUP: the added hook is used by the next test's pass."""
    settings = host.machine.path(SETTINGS)
    settings.write_text(settings.read_text() + HOLD_HOOK)
    before = host.machine.run("journalctl", "-u", "reconciler", "-o", "cat").stdout
    host.machine.run("systemctl", "reload", "reconciler")

    def reloaded() -> bool:
        out = host.machine.run("journalctl", "-u", "reconciler", "-o", "cat").stdout
        return '"settings.reloaded"' in out[len(before) :]

    wait_for(
        reloaded, "settings.reloaded in the journal", timeout=60, detail=lambda: journal_tail(host)
    )
    wait_for(lambda: running_with(host, "at revision"), "the reload pass", timeout=60)


def test_kill_9_mid_pass_is_restarted_and_the_pass_recovered(host: Host) -> None:
    machine = host.machine
    hold = machine.path(HOLD)
    third = host.pki.leaves[2]
    old_pid = unit_state(host)["MainPID"]
    hold.touch()
    try:
        commit = host.push(third)

        def hook_running() -> bool:
            # From the host, which sees the container's processes too.
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if cmdline.read_bytes().startswith(HOLD_ARGV):
                        return True
                except OSError:
                    continue
            return False

        wait_for(hook_running, "the hold hook of the third identity's pass", timeout=90)
        # Files swapped, hooks under way: the pass has not finished (it is pending in the journal).
        assert not [
            r
            for r in audit_records(host)
            if r["event"] in ("pass.succeeded", "pass.failed") and r["revision"] == commit
        ]
        machine.run("/bin/sh", "-c", f"kill -9 {old_pid}")
    finally:
        hold.unlink(missing_ok=True)
    state = wait_for(
        lambda: running_with(host, commit),
        "the restarted daemon applying the third identity",
        timeout=120,
        detail=lambda: journal_tail(host),
    )
    assert state["MainPID"] != old_pid
    recoveries = [
        r
        for r in audit_records(host)
        if r["event"] == "recovery.completed" and r["revision"] == commit
    ]
    assert recoveries, "no recovery.completed record for the interrupted pass"
    assert recoveries[-1]["action"] == "completed"
    assert recoveries[-1]["phase"] == "swapped"
    assert served_fingerprint(host.console_port) == third.fingerprint


def test_a_hung_loop_is_restarted_by_the_watchdog(host: Host) -> None:
    before = unit_state(host)
    host.machine.run("/bin/sh", "-c", f"kill -STOP {before['MainPID']}")

    def restarted() -> dict[str, str] | None:
        state = running_with(host, "at revision")
        return state if state and state["MainPID"] != before["MainPID"] else None

    after = wait_for(
        restarted, "a watchdog restart", timeout=180, detail=lambda: journal_tail(host)
    )
    assert int(after["NRestarts"]) > int(before["NRestarts"])
    systemd_said = host.machine.run("journalctl", "-u", "reconciler", "_PID=1", "-o", "cat").stdout
    assert "Watchdog timeout" in systemd_said


def test_journal_holds_one_json_object_per_daemon_line(host: Host) -> None:
    """`journalctl -u reconciler -o cat`: every line the daemon wrote is one JSON object; the
    others are systemd's own lines about the unit (Started, Watchdog timeout), from PID 1."""
    machine = host.machine
    lines = machine.run("journalctl", "-u", "reconciler", "-o", "cat").stdout.splitlines()
    entries = machine.run("journalctl", "-u", "reconciler", "-o", "json").stdout.splitlines()
    from_systemd = {json.loads(e)["MESSAGE"] for e in entries if json.loads(e).get("_PID") == "1"}
    objects = 0
    for line in lines:
        if line in from_systemd:
            continue
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert "event" in record, line
        objects += 1
    assert objects >= 10
    events = {json.loads(line)["event"] for line in lines if line not in from_systemd}
    assert "settings.reloaded" in events


def test_exposure_score_is_at_most_2(host: Host) -> None:
    out = host.machine.run("systemd-analyze", "security", "reconciler.service", "--no-pager")
    match = re.search(r"Overall exposure level for reconciler\.service: (\d+\.\d+)", out.stdout)
    assert match, out.stdout[-500:]
    assert float(match.group(1)) <= 2.0, out.stdout


def test_install_sh_again_upgrades_in_place_and_keeps_the_settings(host: Host) -> None:
    settings = host.machine.path(SETTINGS).read_bytes()
    before = unit_state(host)
    out = host.machine.sh(INSTALL).stdout
    assert "kept the existing /etc/reconciler/reconciler.toml" in out
    assert host.machine.path(SETTINGS).read_bytes() == settings
    state = wait_for(lambda: running_with(host, "at revision"), "the restarted daemon", timeout=120)
    assert state["MainPID"] != before["MainPID"]
    assert served_fingerprint(host.console_port) == host.pki.leaves[2].fingerprint


def test_uninstall_leaves_no_unit_and_keeps_settings_and_audit(host: Host) -> None:
    machine = host.machine
    machine.sh("/src/systemd/install.sh --uninstall")
    assert machine.run("systemctl", "cat", "reconciler", check=False).returncode != 0
    listed = machine.run("systemctl", "list-unit-files", "reconciler.service", check=False)
    assert "reconciler.service" not in listed.stdout
    assert not machine.path("/etc/systemd/system/reconciler.service").exists()
    assert not machine.path("/opt/reconciler").exists()
    assert machine.path(SETTINGS).is_file()
    assert machine.path("/var/lib/reconciler/audit.jsonl").is_file()
