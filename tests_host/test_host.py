"""The README's host installation on a booted Debian 12 that is a real gateway host.

install.sh, the shipped unit and the example settings (only `state_dir` edited, as a user must),
with Debian's nginx (its default site on 80, the console on 443) and Postfix on 25 in front of
ROOT. Every check that the gateway serves an identity asks real clients inside the machine:
`openssl s_client` to 443 and `openssl s_client -starttls smtp` to 25.

One machine for the module; the tests run in file order, each starting from where the previous
left the host (installed, running, serving), as an operator's session would.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from reconciler.support import devpki
from tests.helpers.certbot import CertbotTree
from tests.helpers.waiting import wait_for
from tests_host.conftest import SETTINGS, WHEELHOUSE, Host

pytestmark = pytest.mark.timeout(600)

INSTALL = (
    "cd /src && systemd/install.sh dist/wheelhouse/mailgw_tls_reconciler-*.whl "
    "--wheelhouse dist/wheelhouse"
)
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
# After the hold: what a pass caught by a `systemctl restart reconciler` still has to do.
RELOAD_AFTER_HOLD = """
[[hooks]]
name = "reload-smtp-after-hold"
on = ["identity"]
run = ["/opt/reconciler/venv/bin/python", "/opt/reconciler/hooks/restart-service", "postfix",
       "--reload"]
timeout_s = 60
"""
LINEAGE = "gateway.test"


def hold_hook_running() -> bool:
    """Whether the hold hook runs (looked for from the host, which sees the machine's
    processes too)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(HOLD_ARGV):
                return True
        except OSError:
            continue
    return False


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


def audit_records(host: Host, event: str | None = None) -> list[dict[str, object]]:
    path = host.machine.path("/var/lib/reconciler/audit.jsonl")
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if event is None or r["event"] == event]


def wait_serving(host: Host, leaf: devpki.Issued, what: str) -> None:
    wait_for(
        lambda: host.serving(leaf),
        f"nginx on 443 and Postfix on 25 to serve {what}",
        timeout=120,
        detail=lambda: journal_tail(host),
    )


def http_get(host: Host, url: str) -> tuple[int, str]:
    """A GET from inside the machine (Python's urllib): status and body."""
    client = (
        "import sys, urllib.error, urllib.request\n"
        "try:\n"
        "    response = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
        "except urllib.error.HTTPError as error:\n"
        "    response = error\n"
        "print(response.status)\n"
        "print(response.read().decode())\n"
    )
    out = host.machine.run("python3", "-c", client, url).stdout
    status, _, body = out.partition("\n")
    return int(status), body


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
    assert host.settings().read_text() == example


def test_the_example_settings_with_a_state_dir_start_the_unit(host: Host) -> None:
    """The README's last step: the one value a user must edit, then start the unit."""
    host.edit_settings(
        {'state_dir = "/srv/gitops/gateway/current"': 'state_dir = "/srv/gitops/gateway/checkout"'}
    )
    commit = host.push(host.pki.leaves[0])
    # Type=notify: start returns once the daemon said READY=1, after its first pass.
    host.machine.run("systemctl", "start", "reconciler", timeout=300)
    state = unit_state(host)
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), journal_tail(host)
    assert running_with(host, commit), (state, journal_tail(host))


def test_nginx_on_80_and_443_and_postfix_on_25_serve_the_first_identity(host: Host) -> None:
    wait_serving(host, host.pki.leaves[0], "the first identity")
    # The package's default site on 80 is untouched, and the check that bound it passed.
    status, body = http_get(host, "http://127.0.0.1/")
    assert status == 200
    assert "Welcome to nginx" in body
    checks = [r for r in audit_records(host, "hook.ran") if r["step"] == "check"]
    assert checks, "the reload-console check never ran"
    assert checks[-1]["hook"] == "reload-console"
    assert checks[-1]["exit_code"] == 0, checks[-1]


def test_metrics_and_readiness_answer_on_loopback(host: Host) -> None:
    assert http_get(host, f"http://127.0.0.1:{host.metrics_port}/readyz")[0] == 200
    status, text = http_get(host, f"http://127.0.0.1:{host.metrics_port}/metrics")
    assert status == 200
    assert "reconciler_" in text


def test_a_push_reaches_both_real_clients(host: Host) -> None:
    second = host.pki.leaves[1]
    postfix_before = host.machine.show("postfix@-", "ExecMainPID")["ExecMainPID"]
    commit = host.push(second)
    wait_serving(host, second, "the second identity")
    wait_for(lambda: running_with(host, commit), f"STATUS= naming {commit}", timeout=60)
    ran = {
        (r["hook"], r["step"]): r["exit_code"]
        for r in audit_records(host, "hook.ran")
        if r["revision"] == commit
    }
    assert ran == {
        ("reload-console", "check"): 0,
        ("reload-console", "run"): 0,
        ("reload-smtp", "run"): 0,
    }
    # `systemctl reload postfix` from the sandbox: the same master, reloaded (not restarted).
    assert host.machine.show("postfix@-", "ExecMainPID")["ExecMainPID"] == postfix_before


def test_a_bad_identity_rolls_back_and_both_keep_serving_the_old_one(host: Host) -> None:
    """A chain through a 1024-bit RSA intermediate passes validation, but nginx (OpenSSL at
    Debian's security level) refuses it: the check fails, every target goes back, both servers
    keep the old one."""
    old = host.pki.leaves[1]
    commit = host.push(*host.pki.weak_chain("weak.test"))

    def failed() -> dict[str, object] | None:
        return next(
            (r for r in audit_records(host, "pass.failed") if r["revision"] == commit), None
        )

    wait_for(
        failed, "the bad identity's pass to fail", timeout=120, detail=lambda: journal_tail(host)
    )
    assert [r for r in audit_records(host, "rollback.completed") if r["revision"] == commit]
    check = next(
        r
        for r in audit_records(host, "hook.ran")
        if r["revision"] == commit and r["step"] == "check"
    )
    assert check["exit_code"] != 0
    assert "ca key too small" in str(check["output_tail"])
    assert host.serving(old)
    key = host.machine.path("/opt/gateway/data/key.pem").read_bytes()
    assert key == old.key_pem
    assert unit_state(host)["ActiveState"] == "active"


def test_the_pushed_ca_reaches_the_os_bundle(host: Host) -> None:
    machine = host.machine
    commit = host.push(host.pki.leaves[1])  # a good state again after the bad one
    wait_for(lambda: running_with(host, commit), "the good state again", timeout=120)
    entry = machine.path("/usr/local/share/ca-certificates/reconciler-partner-ca.crt")
    assert entry.read_bytes().strip() == host.pki.partner_ca.cert_pem.strip()
    bundle = machine.path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    assert host.pki.partner_ca.cert_pem.strip() in bundle
    trusted = devpki.issue(host.pki.partner_ca, "partner.test", sans=("partner.test",))
    untrusted = devpki.issue(
        devpki.make_ca("Not In Any Store CA"), "partner.test", sans=("partner.test",)
    )
    assert verify_with_the_os_store(host, trusted).startswith("TLSv1.")
    assert "CERTIFICATE_VERIFY_FAILED" in verify_with_the_os_store(host, untrusted)


def verify_with_the_os_store(host: Host, server: devpki.Issued) -> str:
    """A TLS server inside the machine (`openssl s_server`, one connection) presenting `server`,
    and a Python client with the default (OS) store connecting to it: its TLS version, or the
    error it gave."""
    machine = host.machine
    machine.path("/root/partner.pem").write_bytes(server.key_pem + server.cert_pem)
    machine.run(
        "systemd-run", "--unit=partner-tls", "--collect", "--quiet",
        "openssl", "s_server", "-accept", "127.0.0.1:8443", "-naccept", "1", "-quiet",
        "-cert", "/root/partner.pem",
    )  # fmt: skip
    client = (
        "import socket, ssl, sys, time\n"
        "context = ssl.create_default_context()\n"
        "deadline = time.monotonic() + 20\n"
        "while True:\n"
        "    try:\n"
        "        raw = socket.create_connection(('127.0.0.1', 8443), timeout=10)\n"
        "        break\n"
        "    except ConnectionRefusedError:\n"
        "        if time.monotonic() > deadline: raise\n"
        "        time.sleep(0.05)\n"
        "try:\n"
        "    with context.wrap_socket(raw, server_hostname='partner.test') as tls:\n"
        "        print(tls.version())\n"
        "except ssl.SSLError as error:\n"
        "    print(error)\n"
    )
    try:
        return machine.run("python3", "-c", client).stdout.strip()
    finally:
        machine.run("systemctl", "stop", "partner-tls", check=False)


def test_sighup_reloads_the_settings(host: Host) -> None:
    """`systemctl reload` sends SIGHUP: file_group and the added hook are used from now on."""
    host.edit_settings(
        {'trust_store = "debian"': 'trust_store = "debian"\nfile_group = "www-data"'}
    )
    settings = host.settings()
    settings.write_text(settings.read_text() + HOLD_HOOK + RELOAD_AFTER_HOLD)
    before = host.machine.run("journalctl", "-u", "reconciler", "-o", "cat").stdout
    host.machine.run("systemctl", "reload", "reconciler")

    def reloaded() -> bool:
        out = host.machine.run("journalctl", "-u", "reconciler", "-o", "cat").stdout
        return '"settings.reloaded"' in out[len(before) :]

    wait_for(
        reloaded, "settings.reloaded in the journal", timeout=60, detail=lambda: journal_tail(host)
    )


def test_the_reload_pass_applies_file_group(host: Host) -> None:
    def owned() -> dict[str, list[str]] | None:
        stats = {
            name: host.machine.run(
                "stat", "-c", "%G %a", f"/opt/gateway/data/{name}"
            ).stdout.split()
            for name in ("key.pem", "cert.pem", "tls.pem")
        }
        return stats if all(group == "www-data" for group, _ in stats.values()) else None

    stats = wait_for(
        owned, "the targets in group www-data", timeout=60, detail=lambda: journal_tail(host)
    )
    assert stats == {
        "key.pem": ["www-data", "600"],
        "cert.pem": ["www-data", "644"],
        "tls.pem": ["www-data", "600"],
    }

    def reload_pass_finished() -> bool:
        out = host.machine.run("journalctl", "-u", "reconciler", "-o", "cat").stdout
        return any(
            '"pass.finished"' in line and '"trigger": "reload"' in line for line in out.splitlines()
        )

    # The whole pass, hooks included: the next test restarts the unit, which must not cut it.
    wait_for(reload_pass_finished, "the reload pass to end", timeout=150)


def test_systemctl_restart_comes_back_serving_without_changing_anything(host: Host) -> None:
    before = unit_state(host)
    applied = len(audit_records(host, "change.applied"))
    seen = len(audit_records(host))
    host.machine.run("systemctl", "restart", "reconciler", timeout=300)
    state = wait_for(lambda: running_with(host, "at revision"), "the restarted daemon", timeout=60)
    assert state["MainPID"] != before["MainPID"]
    changed = audit_records(host, "change.applied")[applied:]
    since = [(r["event"], r.get("path"), r.get("reason")) for r in audit_records(host)[seen:]]
    assert state["StatusText"].startswith("no-change at revision"), (state, since)
    assert changed == []
    assert host.serving(host.pki.leaves[1])


def test_kill_9_mid_pass_is_restarted_and_the_pass_recovered(host: Host) -> None:
    machine = host.machine
    hold = machine.path(HOLD)
    third = host.pki.leaves[2]
    old_pid = unit_state(host)["MainPID"]
    hold.touch()
    try:
        commit = host.push(third)

        wait_for(hold_hook_running, "the hold hook of the third identity's pass", timeout=90)
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
    recoveries = [r for r in audit_records(host, "recovery.completed") if r["revision"] == commit]
    assert recoveries, "no recovery.completed record for the interrupted pass"
    assert recoveries[-1]["action"] == "completed"
    assert recoveries[-1]["phase"] == "swapped"
    # Completed: the hooks ran again, so nginx and Postfix both serve the third identity.
    wait_serving(host, third, "the third identity after the recovery")


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


def test_after_a_reboot_the_unit_starts_and_both_serve_the_identity(host: Host) -> None:
    commit = unit_state(host)["StatusText"].rsplit(" ", 1)[-1]
    host.machine.reboot()
    state = wait_for(
        lambda: running_with(host, commit),
        "the unit started at boot",
        timeout=180,
        detail=lambda: journal_tail(host),
    )
    assert state["NRestarts"] == "0"
    wait_serving(host, host.pki.leaves[2], "the identity after the reboot")


def test_a_restart_during_the_hooks_lets_the_pass_reload_postfix_and_finish(host: Host) -> None:
    """`systemctl restart reconciler` (a package upgrade does it) while a pass runs its hooks:
    the stop waits for the pass, and the pass's own `systemctl reload postfix` must not wait for
    that stop (the unit is ordered after postfix.service): the pass succeeds, well within the
    hook's 60 s, and the unit comes back."""
    machine = host.machine
    hold = machine.path(HOLD)
    leaf = host.pki.leaf("restart.gateway.test")
    old_pid = unit_state(host)["MainPID"]
    hold.touch()
    try:
        commit = host.push(leaf)
        wait_for(hold_hook_running, "the hold hook of the pass", timeout=90)
        machine.run("systemctl", "restart", "--no-block", "reconciler")
        wait_for(
            lambda: unit_state(host)["ActiveState"] == "deactivating",
            "the unit's stop, waiting for the pass",
            timeout=30,
        )
    finally:
        hold.unlink(missing_ok=True)

    def restarted() -> dict[str, str] | None:
        state = running_with(host, commit)
        return state if state is not None and state["MainPID"] != old_pid else None

    wait_for(restarted, "the unit back", timeout=40, detail=lambda: journal_tail(host))
    ended = [
        (r["event"], r.get("reason"))
        for r in audit_records(host)
        if r["revision"] == commit and r["event"] in ("pass.succeeded", "pass.failed")
    ]
    assert ended[:1] == [("pass.succeeded", None)], ended
    wait_serving(host, leaf, "the identity pushed before the restart")


def test_certbots_lineage_is_the_identity_and_its_renewal_is_followed(host: Host) -> None:
    """certbot's own code (Debian's certbot package on the machine) issues and renews; the
    settings name its live directory in key_dirs (the example's commented line); no deploy
    hook: the daemon's watch applies the renewal."""
    machine = host.machine
    certbot = CertbotTree(
        "/etc/letsencrypt",
        "/root/certbot",
        lambda argv: machine.run("python3", *argv, check=False),
        machine.path,
    )
    issued, renewed = host.pki.leaf("mail1.test"), host.pki.leaf("mail2.test")
    certbot.issue(LINEAGE, issued, host.pki.intermediate.cert_pem)
    live = certbot.live(LINEAGE)
    host.edit_settings(
        {
            '# key_dirs = ["/etc/letsencrypt/live/mail.example.org"]': f'key_dirs = ["{live}"]',
        }
    )
    host.machine.run("systemctl", "reload", "reconciler")
    files = host.desired(issued)
    del files["tls/cert.pem"], files["tls/key.pem"]
    files["gateway.toml"] = (
        files["gateway.toml"]
        .replace(b'"tls/cert.pem"', f'"{live}/fullchain.pem"'.encode())
        .replace(b'"tls/key.pem"', f'"{live}/privkey.pem"'.encode())
    )
    commit = host.push_files(files)
    wait_for(lambda: running_with(host, commit), "the certbot identity applied", timeout=120)
    wait_serving(host, issued, "certbot's first certificate")
    rejected = len(audit_records(host, "state.rejected"))

    certbot.renew(LINEAGE, renewed, host.pki.intermediate.cert_pem)
    assert machine.run("readlink", f"{live}/privkey.pem").stdout.strip() == (
        f"../../archive/{LINEAGE}/privkey2.pem"
    )
    wait_serving(host, renewed, "certbot's renewed certificate")
    assert len(audit_records(host, "state.rejected")) == rejected


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
    settings = host.settings().read_bytes()
    before = unit_state(host)
    out = host.machine.sh(INSTALL).stdout
    assert "kept the existing /etc/reconciler/reconciler.toml" in out
    assert host.settings().read_bytes() == settings
    state = wait_for(lambda: running_with(host, "at revision"), "the restarted daemon", timeout=120)
    assert state["MainPID"] != before["MainPID"]
    assert host.served(host.console_port) is not None


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
