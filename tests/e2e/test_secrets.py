"""No private key material in any output, log, audit record or bookkeeping file, ever."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.net import free_port
from tests.helpers.passes import secret_haystacks
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki

FAILING_HOOK = """
[[hooks]]
name = "fails-on-demand"
on = ["identity"]
run = ["{script}"]
"""


def _key_lines(pki: Pki) -> list[str]:
    lines = []
    for leaf in (pki.leaf, pki.leaf2):
        lines += [ln for ln in leaf.key_pem.decode().splitlines() if "-----" not in ln]
    return lines


def test_no_key_line_anywhere_after_every_command_and_a_failing_pass(
    sandbox: Sandbox, pki: Pki, tmp_path: Path
) -> None:
    # Profiles that point at closed loopback ports: `probe` must not leave this machine.
    for name in ("core", "relay"):
        sandbox.state.remove(f"profiles/{name}.toml")
    sandbox.state.profile("local", f'url = "smtps://127.0.0.1:{free_port()}"\n')
    switch = tmp_path / "fail"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\ncat "$RECONCILER_ROOT/data/tls.pem"\n[ ! -e "{switch}" ]\n')
    script.chmod(0o755)
    sandbox.hooks = FAILING_HOOK.format(script=script)

    outputs: list[subprocess.CompletedProcess[str]] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = sandbox.run(*args)
        outputs.append(result)
        return result

    run("validate")
    run("plan")
    run("plan", "--json")
    assert run("apply").returncode == 0
    # A failing pass: a new identity whose hook fails (and prints the key bundle to its output).
    sandbox.state.identity(pki, pki.leaf2)
    switch.touch()
    assert run("apply").returncode == 1
    switch.unlink()
    # Rejected states whose files hold key bytes where they do not belong.
    sandbox.state.write("tls/cert.pem", pki.leaf2.key_pem + pki.chain(pki.leaf2))
    sandbox.state.write("trust/oops.pem", pki.leaf.key_pem)
    sandbox.state.write("tls/key.pem", pki.leaf.key_pem)  # also mismatched now
    assert run("validate").returncode == 1
    assert run("apply").returncode == 1
    run("plan", "--json")
    for args in (
        ("status",),
        ("status", "--json"),
        ("suspend", "--reason", "sweep"),
        ("resume",),
        ("audit", "show"),
        ("audit", "show", "--json"),
        ("audit", "verify"),
        ("probe",),
        ("probe", "--json"),
        ("schema",),
    ):
        run(*args)

    haystacks = secret_haystacks(sandbox, outputs)
    assert (sandbox.var / "audit.jsonl").exists()
    assert any("hook.ran" in text for text in haystacks.values())
    for line in _key_lines(pki):
        for where, text in haystacks.items():
            assert line not in text, f"a private key line leaked into {where}"
