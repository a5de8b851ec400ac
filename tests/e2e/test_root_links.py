"""Links and modes inside ROOT and var_dir: nothing followed that the reconciler did not make.

Another program on the gateway may plant a link where one of the reconciler's directories or
files belongs. A pass then names it and reads, writes and deletes nothing through it; the
directories it owns keep their modes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.sandbox import Sandbox


@pytest.fixture
def applied(sandbox: Sandbox) -> Sandbox:
    keys = sandbox.base / "keys"
    keys.mkdir()
    (keys / "password").write_bytes(b"relay-password-in-use\n")
    sandbox.extra += f'key_dirs = ["{keys}"]\n'
    sandbox.state.profile(
        "relay", f'url = "smtps://relay.example.com"\npassword_file = "{keys}/password"\n'
    )
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    return sandbox


def _victim(base: Path) -> Path:
    """A directory of someone else's files, including names the reconciler would manage."""
    victim = base / "victim"
    victim.mkdir()
    for name in ("other.password", "vault.api_key", "key.pem", "ssl.conf", "notes.txt"):
        (victim / name).write_text(f"someone's {name}\n")
    return victim


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry's bytes (None for a directory)."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in sorted(directory.iterdir())}


def _replace_with_link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        path.rmdir()
    else:
        path.unlink(missing_ok=True)
    path.symlink_to(target)


@pytest.mark.parametrize("planted", ["data/secrets", "data", "nginx"])
def test_a_link_planted_for_a_root_directory_is_refused_and_nothing_goes_through_it(
    applied: Sandbox, planted: str
) -> None:
    victim = _victim(applied.base)
    before = _snapshot(victim)
    _replace_with_link(applied.root / planted, victim)
    applied.state.profile("second", 'url = "smtps://second.example.com"\n')  # a change to apply
    for args in (("apply",), ("plan",), ("status",)):
        result = applied.run(*args)
        assert f"{applied.root / planted}: is a symbolic link" in result.stdout + result.stderr
    assert applied.run("apply").returncode == 1
    assert _snapshot(victim) == before
    records = [json.loads(line) for line in (applied.var / "audit.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["event"] == "pass.failed"]
    assert "symbolic link" in str(failed[-1]["reason"])
    # Removing the link lets the next pass make the directory again.
    (applied.root / planted).unlink()
    assert applied.run("apply").returncode == 0, applied.run("apply").stderr
    assert (applied.root / planted).is_dir()


VAR_LINKS: dict[str, Callable[[Path, Path], Path]] = {
    "lock": lambda var, victim: victim / "notes.txt",
    "txn": lambda var, victim: victim,
    "generations": lambda var, victim: victim,
    "audit.jsonl": lambda var, victim: victim / "notes.txt",
}


@pytest.mark.parametrize("planted", VAR_LINKS, ids=VAR_LINKS)
def test_a_link_planted_in_var_dir_is_never_written_or_deleted_through(
    applied: Sandbox, planted: str
) -> None:
    victim = _victim(applied.base)
    for number in range(8):  # as many old "generations" as pruning would delete
        (victim / f"20260101T00000{number}Z-abcdef").mkdir()
    before = _snapshot(victim)
    _replace_with_link(applied.var / planted, VAR_LINKS[planted](applied.var, victim))
    applied.state.profile("second", 'url = "smtps://second.example.com"\n')
    result = applied.run("apply")
    assert _snapshot(victim) == before
    if result.returncode == 0:  # generations: the pass itself needs no link there
        assert planted == "generations"
    else:
        assert "symbolic link" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("directory", "mode", "key_mode", "wanted"),
    [
        ("data/secrets", 0o777, None, 0o700),  # the issue's
        ("data/secrets", 0o755, '"0640"', 0o750),
        ("data", 0o777, None, 0o775),
        ("nginx", 0o757, None, 0o755),
    ],
    ids=["secrets-open", "secrets-group", "data-world-writable", "nginx-world-writable"],
)
def test_the_modes_of_its_directories_are_reported_and_set_back(
    applied: Sandbox, directory: str, mode: int, key_mode: str | None, wanted: int
) -> None:
    if key_mode is not None:
        applied.extra += f"key_mode = {key_mode}\n"
        assert applied.run("apply").returncode == 0
    path = applied.root / directory
    os.chmod(path, mode)
    plan = applied.run("plan")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert f"{path}: mode {mode:04o}, will be {wanted:04o}" in plan.stdout
    assert applied.run("apply").returncode == 0
    assert path.stat().st_mode & 0o7777 == wanted
    audit = (applied.var / "audit.jsonl").read_text()
    assert f"{path} had mode {mode:04o}: set to {wanted:04o}" in audit
    assert applied.run("plan").returncode == 0


def test_root_and_var_dir_themselves_may_be_links(sandbox: Sandbox) -> None:
    """They are configured (a volume, a bind mount, StateDirectory's link): only what is
    inside them is the reconciler's own."""
    for name in ("root", "var"):
        real = sandbox.base / f"real-{name}"
        if (sandbox.base / name).exists():
            (sandbox.base / name).rename(real)
        else:
            real.mkdir(mode=0o700)
        (sandbox.base / name).symlink_to(real)
    assert sandbox.run("apply").returncode == 0, sandbox.run("apply").stderr
    sandbox.state.profile("second", 'url = "smtps://second.example.com"\n')
    assert sandbox.run("apply").returncode == 0
    assert (sandbox.base / "real-var" / "audit.jsonl").is_file()
    assert (sandbox.base / "real-root" / "data" / "server-profiles.json").is_file()


def test_a_rollback_that_must_make_the_secrets_directory_again_makes_it_private(
    applied: Sandbox,
) -> None:
    """The pass's hook removes ROOT/data/secrets and fails: the rollback puts the previous
    credential back in a directory only its owner can list, never a world-listable one."""
    keys = applied.base / "keys"
    (keys / "password").write_bytes(b"relay-password-rotated\n")
    secrets = applied.root / "data" / "secrets"
    script = applied.base / "remove-secrets-and-fail.sh"
    script.write_text(
        f"#!/bin/sh\n[ \"$RECONCILER_PHASE\" = rollback ] && exit 0\nrm -rf '{secrets}'\nexit 1\n"
    )
    script.chmod(0o755)
    applied.hooks = f'[[hooks]]\nname = "fails"\non = ["profiles"]\nrun = ["{script}"]\n'
    result = applied.run("apply")
    assert result.returncode == 1, result.stdout + result.stderr
    assert secrets.stat().st_mode & 0o7777 == 0o700
    assert (secrets / "relay.password").read_bytes() == b"relay-password-in-use\n"
