"""Profile credentials end to end: copied 0600 in the pass's transaction, rotated, never shown."""

from __future__ import annotations

import json
import random
import re
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.gitops import ConfigMapVolume
from tests.helpers.passes import (
    CRASH_POINTS,
    assert_one_key_pair,
    hook_runs,
    install_record_hook,
    kill_an_apply_at_random,
    revision_of,
    secret_haystacks,
)
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki
from tests.helpers.tls import closed_port


def new_secret(what: str) -> bytes:
    """A value generated at run time, distinctive enough to find anywhere it leaks."""
    return f"{what}-{secrets.token_hex(12)}\n".encode()


class Secrets:
    """A key_dir that is a Kubernetes Secret volume (`..data` swapped by rename)."""

    def __init__(self, sandbox: Sandbox) -> None:
        (sandbox.base / "secret").mkdir()
        self.volume = ConfigMapVolume(sandbox.base / "secret")
        self.dir = self.volume.state_dir
        sandbox.extra += f'key_dirs = ["{self.dir}"]\n'
        self.values: dict[str, bytes] = {}

    def push(self, password: bytes, api_key: bytes) -> None:
        self.values = {"password": password, "apikey": api_key}
        self.volume.push(self.values)


def with_credentials(sandbox: Sandbox) -> Secrets:
    """Profiles on closed loopback ports (probe stays on this machine), one with a password and a
    Vault one with an API key, both read from a Secret volume."""
    for name in ("core", "relay"):
        sandbox.state.remove(f"profiles/{name}.toml")
    store = Secrets(sandbox)
    store.push(new_secret("password"), new_secret("apikey"))
    sandbox.state.profile(
        "relay",
        f"""
        servers = ["smtps://127.0.0.1:{closed_port()}", "smtps://localhost:{closed_port()}"]
        password_file = "{store.dir}/password"
        """,
    )
    sandbox.state.profile(
        "vault",
        f"""
        type = "vault"
        url = "https://127.0.0.1:{closed_port()}"
        api_key_file = "{store.dir}/apikey"
        """,
    )
    return store


def secrets_dir(sandbox: Sandbox) -> Path:
    return sandbox.root / "data" / "secrets"


def assert_copies(sandbox: Sandbox, store: Secrets) -> None:
    directory = secrets_dir(sandbox)
    assert directory.stat().st_mode & 0o777 == 0o700
    for name, key in (("relay.password", "password"), ("vault.api_key", "apikey")):
        path = directory / name
        assert path.read_bytes() == store.values[key]
        assert path.stat().st_mode & 0o777 == 0o600


def test_credentials_are_copied_0600_and_named_by_the_profile_entry(sandbox: Sandbox) -> None:
    store = with_credentials(sandbox)
    applied = sandbox.run("apply")
    assert applied.returncode == 0, applied.stderr
    assert_copies(sandbox, store)
    document = json.loads((sandbox.root / "data" / "server-profiles.json").read_bytes())
    entries = {p["name"]: p for p in document["profiles"]}
    assert entries["relay"]["password_file"] == str(secrets_dir(sandbox) / "relay.password")
    assert entries["vault"]["api_key_file"] == str(secrets_dir(sandbox) / "vault.api_key")
    assert [s["port"] for s in entries["vault"]["servers"]] == [entries["vault"]["port"]]

    # A profile that no longer names a credential (or is gone) leaves no copy behind.
    sandbox.state.remove("profiles/vault.toml")
    assert sandbox.run("apply").returncode == 0
    assert sorted(p.name for p in secrets_dir(sandbox).iterdir()) == ["relay.password"]
    assert sandbox.run("plan").returncode == 0


REJECTED = {
    "empty": lambda s, d: (d / "password").write_bytes(b""),
    "too-large": lambda s, d: (d / "password").write_bytes(b"p" * 5000),
    "missing": lambda s, d: s.state.profile(
        "relay", f'url = "smtps://127.0.0.1:1"\npassword_file = "{d}/nope"\n'
    ),
    "outside-key-dirs": lambda s, d: s.state.profile(
        "relay", f'url = "smtps://127.0.0.1:1"\npassword_file = "{s.base}/loose"\n'
    ),
    "relative": lambda s, d: s.state.profile(
        "relay", 'url = "smtps://127.0.0.1:1"\npassword_file = "tls/password"\n'
    ),
    "on-the-wrong-type": lambda s, d: s.state.profile(
        "relay", f'url = "https://127.0.0.1:1"\npassword_file = "{d}/password"\n'
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_rejected_credential_changes_nothing(sandbox: Sandbox, case: str) -> None:
    store = with_credentials(sandbox)
    (sandbox.base / "loose").write_bytes(new_secret("loose"))
    assert sandbox.run("apply").returncode == 0
    before = sandbox.targets()
    # The kubelet's data directory is what `..data` points at; write there to edit in place.
    REJECTED[case](sandbox, store.dir / "..data")
    result = sandbox.run("apply")
    assert result.returncode == 1
    assert "profiles/relay.toml" in result.stderr + result.stdout
    assert sandbox.targets() == before
    validate = sandbox.run("validate")
    assert validate.returncode == 1
    shown = validate.stdout + validate.stderr
    assert re.search(r"profiles/relay\.toml(:\d+)?: password_file: ", shown), shown


def test_a_credential_value_never_reaches_any_output(sandbox: Sandbox, tmp_path: Path) -> None:
    store = with_credentials(sandbox)
    first = dict(store.values)
    switch = tmp_path / "fail"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\necho "changed $RECONCILER_CHANGED"\n[ ! -e "{switch}" ]\n')
    script.chmod(0o755)
    sandbox.hooks = f'[[hooks]]\nname = "h"\non = ["profiles"]\nrun = ["{script}"]\n'
    outputs: list[subprocess.CompletedProcess[str]] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        outputs.append(sandbox.run(*args))
        return outputs[-1]

    run("validate")
    run("plan")
    run("plan", "--json")
    assert run("apply").returncode == 0
    # a rotation whose hook fails: rolled back, audited with the failure
    store.push(new_secret("password"), new_secret("apikey"))
    switch.touch()
    assert run("apply").returncode == 1
    switch.unlink()
    assert run("apply").returncode == 0
    # a rejected one: the credential file is empty now
    store.push(b"", store.values["apikey"])
    assert run("apply").returncode == 1
    for args in (
        ("validate",),
        ("plan",),
        ("plan", "--json"),
        ("status",),
        ("status", "--json"),
        ("audit", "show"),
        ("audit", "show", "--json"),
        ("probe",),
        ("probe", "--json"),
    ):
        run(*args)
    haystacks = secret_haystacks(sandbox, outputs)
    assert any("hook.ran" in text for text in haystacks.values())
    values = {*first.values(), *store.values.values()} - {b""}
    for value in values:
        text = value.decode().strip()
        for where, haystack in haystacks.items():
            assert text not in haystack, f"a credential leaked into {where}"


def test_a_secret_volume_rotation_is_applied_and_runs_the_profiles_hooks(
    sandbox: Sandbox,
    start_daemon: Callable[..., Daemon],
) -> None:
    store = with_credentials(sandbox)
    log = install_record_hook(sandbox)
    daemon = start_daemon()
    wait_for(lambda: secrets_dir(sandbox).is_dir(), "the first pass's copies", daemon)
    assert_copies(sandbox, store)
    runs_before = len(hook_runs(log))

    store.push(new_secret("rotated"), store.values["apikey"])  # the kubelet's `..data` swap
    copy = secrets_dir(sandbox) / "relay.password"
    wait_for(lambda: copy.read_bytes() == store.values["password"], "the rotation", daemon)
    assert copy.stat().st_mode & 0o777 == 0o600
    lines = wait_for(
        lambda: log.read_text().splitlines()[runs_before:] if log.exists() else None,
        "the hook run of the rotation",
        daemon,
    )
    assert lines[0].startswith("apply ")
    assert lines[0].split()[2] == "profiles"
    changed = [r for r in daemon.audit("change.applied") if r["path"] == str(copy)]
    assert [r["action"] for r in changed] == ["create", "update"]
    for value in store.values.values():
        assert value.decode().strip() not in daemon.log_text()
    assert daemon.stop() == 0


# --------------------------------------------------------------------------- crashes


def assert_credential_is_one_of(sandbox: Sandbox, versions: list[dict[str, bytes]]) -> None:
    """Each copy is whole (one of the values ever pushed, never half written) and 0600; a temp
    file a kill left under ROOT is readable by no one its target is not readable by (a key's and
    a credential's by its owner only)."""
    directory = secrets_dir(sandbox)
    for name, key in (("relay.password", "password"), ("vault.api_key", "apikey")):
        path = directory / name
        assert path.read_bytes() in {v[key] for v in versions}, name
        assert path.stat().st_mode & 0o077 == 0, name
    for path in sandbox.root.rglob("*"):
        if path.is_file() and path.name.startswith(".reconciler-tmp-"):
            target = path.with_name(path.name.removeprefix(".reconciler-tmp-").rpartition(".")[0])
            public = 0o644 if target.name == "cert.pem" or target.suffix == ".conf" else 0o600
            assert path.stat().st_mode & 0o777 & ~public == 0, path


def rotate(sandbox: Sandbox, store: Secrets, pki: Pki, attempt: int) -> None:
    """A rotation of both credentials together with a new identity: one pass, one transaction."""
    store.push(new_secret(f"password{attempt}"), new_secret(f"apikey{attempt}"))
    sandbox.state.identity(pki, [pki.leaf, pki.leaf2][(attempt + 1) % 2])


@pytest.mark.parametrize("step", CRASH_POINTS)
def test_crash_at_each_step_of_a_credential_rotation(step: str, sandbox: Sandbox, pki: Pki) -> None:
    store = with_credentials(sandbox)
    log = install_record_hook(sandbox)
    assert sandbox.run("apply").returncode == 0
    old, old_values = sandbox.targets(), dict(store.values)
    rotate(sandbox, store, pki, 1)
    new_revision = revision_of(sandbox)

    sandbox.env["RECONCILER_TEST_CRASH_AT"] = step
    assert sandbox.run("apply").returncode == 86
    assert_credential_is_one_of(sandbox, [old_values, store.values])

    sandbox.env["RECONCILER_TEST_CRASH_AT"] = "recovered"
    assert sandbox.run("apply").returncode == 86
    assert_credential_is_one_of(sandbox, [old_values, store.values])
    if sandbox.targets() != old:
        # the new set stands whole: credentials and identity together, hooks run
        assert sandbox.run("plan").returncode == 0
        assert ("apply", new_revision) in hook_runs(log)
    assert_one_key_pair(sandbox)

    del sandbox.env["RECONCILER_TEST_CRASH_AT"]
    assert sandbox.run("apply").returncode == 0
    assert_copies(sandbox, store)
    assert hook_runs(log)[-1] == ("apply", new_revision)


@pytest.mark.timeout(600)  # 4 to 24 rounds of 4 commands each, on a shared 2-core machine
def test_kill_9_at_random_moments_during_credential_rotations(sandbox: Sandbox, pki: Pki) -> None:
    store = with_credentials(sandbox)
    install_record_hook(sandbox)
    for n in range(10):
        sandbox.state.profile(f"mx-{n:02d}", f'url = "smtps://mx{n}.example.com"\n')
    assert sandbox.run("apply").returncode == 0
    versions = [dict(store.values)]
    rng = random.Random(18)
    interrupted = 0
    # At least 4 rotations, more (up to 24) until a kill landed inside a pass (see the load note
    # in tests/txn/test_transaction.py): about one kill in three does.
    for attempt in range(24):
        if attempt >= 4 and interrupted:
            break
        rotate(sandbox, store, pki, attempt)
        versions.append(dict(store.values))
        before = sandbox.targets()
        interrupted += kill_an_apply_at_random(sandbox, rng)
        assert_credential_is_one_of(sandbox, versions)
        sandbox.env["RECONCILER_TEST_CRASH_AT"] = "recovered"
        assert sandbox.run("apply").returncode == 86
        del sandbox.env["RECONCILER_TEST_CRASH_AT"]
        converged = sandbox.run("plan").returncode == 0
        assert sandbox.targets() == before or converged, f"attempt {attempt}: mixed set"
        assert_credential_is_one_of(sandbox, versions)
        assert_one_key_pair(sandbox)
        assert sandbox.run("apply").returncode == 0
        assert_copies(sandbox, store)
    assert interrupted, "no kill landed inside a pass: the sweep proved nothing"
