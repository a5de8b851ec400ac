"""The journald recipe on a booted Debian: the unit's `audit.head` events, exported with
`journalctl -o json` and turned into a witness file by the documented jq filter, catch every attack
on the audit log the unit wrote (with two rotations on the way).

One machine for the module (the `host` fixture); the tests run in file order.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from reconciler.audit.witness import read_head
from tests.helpers.attacks import log_files, rotate, run_attacks
from tests.helpers.recipes import recipe, run_recipe
from tests.helpers.waiting import wait_for
from tests_host.conftest import Host

pytestmark = pytest.mark.timeout(600)

INSTALL = (
    "cd /src && systemd/install.sh dist/wheelhouse/mailgw_tls_reconciler-*.whl "
    "--wheelhouse dist/wheelhouse"
)
VAR = "/var/lib/reconciler"
SETTINGS = f"""\
state_dir = "/srv/gitops/gateway/checkout"
root = "/opt/gateway"
var_dir = "{VAR}"
trust_store = "debian"
log_format = "json"
"""


def journal(host: Host, *argv: str) -> str:
    return host.machine.run("journalctl", "-u", "reconciler", *argv).stdout


def head_in_journal(host: Host, after: int) -> int:
    """The log's head seq once it is beyond `after` and the journal holds its audit.head."""
    head = read_head(host.machine.path(f"{VAR}/audit.jsonl"))
    if head is None or head.seq <= after:
        return 0
    return head.seq if f'"hash": "{head.hash}"' in journal(host, "-o", "cat") else 0


def test_the_unit_publishes_heads_to_the_journal_across_rotations(host: Host) -> None:
    machine = host.machine
    machine.sh(INSTALL)
    machine.path("/etc/reconciler/reconciler.toml").write_text(SETTINGS)
    leaves = host.pki.leaves
    host.push(leaves[0])
    machine.run("systemctl", "start", "reconciler", timeout=300)
    seq = wait_for(lambda: head_in_journal(host, 0), "the first head in the journal", timeout=60)
    for number in range(1, 7):
        host.push(leaves[number % len(leaves)])
        seq = wait_for(
            lambda after=seq: head_in_journal(host, after), f"push {number}'s head", timeout=60
        )
        if number in (2, 4):
            rotate(machine.path(VAR))
    machine.run("systemctl", "stop", "reconciler")
    assert len(log_files(machine.path(VAR))) == 3


def test_heads_from_the_journal_catch_every_attack(host: Host, tmp_path: Path) -> None:
    script = recipe("sh", "journalctl")
    export, rest = script.split("|\n", 1)
    argv = shlex.split(export)
    assert argv[0] == "journalctl"
    # journalctl runs where the journal is (in the machine), the rest of the pipeline here.
    exported = host.machine.run(*argv).stdout
    config = tmp_path / "reconciler.toml"
    config.write_text(f'var_dir = "{host.machine.path(VAR)}"\n')
    done = run_recipe(rest, tmp_path, config, stdin=exported)
    assert done.returncode == 0, done.stdout + done.stderr
    heads = tmp_path / "heads-journal.txt"
    assert len(heads.read_text().splitlines()) >= 7
    run_attacks(log_files(host.machine.path(VAR)), heads, tmp_path / "attacks")
