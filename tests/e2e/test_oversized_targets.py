"""A target far larger than anything the reconciler writes: replaced, never read or kept whole.

`truncate -s 200M ROOT/data/cert.pem` (a sparse file) cost a pass its size in memory (it was
read to be hashed, and again to be backed up) and its size in var_dir for every generation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki

HUGE = 200 << 20
# A child that runs the command and reports the peak memory (KiB) of that command alone.
PEAK = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], check=False); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
)


def apply_measured(box: Sandbox) -> tuple[int, int]:
    """`reconciler apply` in a child of its own: (exit code, peak RSS in MiB)."""
    box.write_config()
    env = {**os.environ, **box.env, "RECONCILER_CONFIG": str(box.config)}
    command = [sys.executable, "-c", PEAK, sys.executable, "-m", "reconciler", "apply"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False
    )
    return done.returncode, int(done.stdout.strip().splitlines()[-1]) // 1024


def _size_of(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


def _huge(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(HUGE)


@pytest.fixture
def applied(sandbox: Sandbox) -> Sandbox:
    assert sandbox.run("apply").returncode == 0
    return sandbox


@pytest.mark.parametrize(
    "planted",
    [
        ("data/cert.pem",),  # the issue's
        ("data/cert.pem", "data/tls.pem", "data/server-profiles.json"),
        ("trust:reconciler-left-over.crt",),  # a file no longer wanted: deleted, not read
    ],
    ids=["cert", "three-targets", "left-over-trust-file"],
)
def test_a_huge_target_is_replaced_without_being_read_or_kept(
    applied: Sandbox, planted: tuple[str, ...]
) -> None:
    wanted = {p: (applied.root / p).read_bytes() for p in planted if not p.startswith("trust:")}
    paths = [
        applied.trust_dir / p.removeprefix("trust:") if p.startswith("trust:") else applied.root / p
        for p in planted
    ]
    for path in paths:
        _huge(path)
    var_before = _size_of(applied.var)
    code, peak_mib = apply_measured(applied)
    assert code == 0
    assert peak_mib < 150, f"{peak_mib} MiB: the huge file was read"
    assert _size_of(applied.var) - var_before < 5 << 20, "the huge file was kept"
    for rel, data in wanted.items():
        assert (applied.root / rel).read_bytes() == data
    for path in paths:
        assert not path.exists() or path.stat().st_size < HUGE
    records = [json.loads(line) for line in (applied.var / "audit.jsonl").read_text().splitlines()]
    befores = {r["path"]: r["before_sha256"] for r in records if "before_sha256" in r}
    assert {befores[str(path)] for path in paths} == {"oversized"}


def test_a_rollback_removes_a_huge_previous_file_it_did_not_keep(applied: Sandbox) -> None:
    script = applied.base / "fail.sh"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    applied.hooks = f'[[hooks]]\nname = "fails"\non = ["identity"]\nrun = ["{script}"]\n'
    cert = applied.root / "data" / "cert.pem"
    _huge(cert)
    var_before = _size_of(applied.var)
    code, peak_mib = apply_measured(applied)
    assert code == 1
    assert peak_mib < 150
    assert _size_of(applied.var) - var_before < 5 << 20
    assert not cert.exists()  # its previous content was garbage, not kept: nothing to put back
    applied.hooks = ""
    assert applied.run("apply").returncode == 0
    assert cert.stat().st_size < HUGE


def test_a_rollback_puts_back_a_previous_identity_larger_than_every_new_file(
    sandbox: Sandbox, pki: Pki
) -> None:
    """An RSA identity replaced by a far smaller EC one, whose hook fails: every previous file
    is larger than anything the failed pass writes, and is put back byte for byte (it is what an
    earlier pass wrote, not garbage)."""
    from reconciler.support import devpki

    big = devpki.issue(pki.intermediate, "gateway.test", key_type="rsa3072")
    sandbox.state.identity(pki, big)
    assert sandbox.run("apply").returncode == 0
    before = sandbox.targets()
    largest_new = len(pki.chain()) + len(pki.leaf.key_pem)
    assert (sandbox.root / "data" / "tls.pem").stat().st_size > largest_new
    script = sandbox.base / "fail.sh"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    sandbox.hooks = f'[[hooks]]\nname = "fails"\non = ["identity"]\nrun = ["{script}"]\n'
    sandbox.state.identity(pki)  # the EC leaf
    assert sandbox.run("apply").returncode == 1
    assert sandbox.targets() == before
