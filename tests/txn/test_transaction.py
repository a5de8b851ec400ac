"""Crash safety: all of a pass or none, recovery first, one writer, clean failures on I/O errors."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.support import devpki
from reconciler.txn.lock import RootLock
from tests.helpers import REPO
from tests.helpers.passes import (
    CRASH_POINTS,
    HOOK,
    assert_one_key_pair,
    audit,
    crash_apply_at,
    hook_runs,
    install_record_hook,
    kill_an_apply_at_random,
    revision_of,
)
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki


def change_everything(box: Sandbox, pki: Pki) -> None:
    """State B: a new identity, a new and a removed trust entry, a changed profile."""
    box.state.identity(pki, pki.leaf2)
    box.state.remove("trust/partner-ca.pem")
    box.state.trust("root-ca", pki.root.cert_pem)
    box.state.profile("relay", 'url = "smtps://relay2.example.com:465"\n')


def key_body_lines(pki: Pki) -> list[bytes]:
    lines = []
    for leaf in (pki.leaf, pki.leaf2):
        lines += [line for line in leaf.key_pem.splitlines() if b"-----" not in line]
    return lines


def assert_no_readable_key_material(box: Sandbox, pki: Pki) -> None:
    """Nothing that holds key bytes is readable by group or others, and var_dir is 0700."""
    body = key_body_lines(pki)
    assert box.var.stat().st_mode & 0o077 == 0
    for top in (box.var, box.root / "data"):
        for path in top.rglob("*"):
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                if any(line in content for line in body):
                    assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.parametrize("step", CRASH_POINTS)
def test_crash_at_each_step_recovers_to_old_or_new_set(
    step: str, sandbox: Sandbox, pki: Pki
) -> None:
    log = install_record_hook(sandbox)
    assert sandbox.run("apply").returncode == 0
    old = sandbox.targets()
    old_revision = revision_of(sandbox)
    change_everything(sandbox, pki)
    new_revision = revision_of(sandbox)

    sandbox.env["RECONCILER_TEST_CRASH_AT"] = step
    crashed = sandbox.run("apply")
    assert crashed.returncode == 86, crashed.stderr
    assert_no_readable_key_material(sandbox, pki)

    # The next start recovers first; stop it dead right after recovery to look at what it did.
    sandbox.env["RECONCILER_TEST_CRASH_AT"] = "recovered"
    assert sandbox.run("apply").returncode == 86
    now = sandbox.targets()
    runs = hook_runs(log)
    if now == old:
        assert runs[-1] == ("apply", old_revision), runs
    else:
        assert revision_of(sandbox) == new_revision
        plan = sandbox.run("plan")
        assert plan.returncode == 0, f"mixed set after recovery:\n{plan.stdout}"
        # the new set stands, so its hooks ran (at least once, maybe again after a late crash)
        assert ("apply", new_revision) in runs
    assert_one_key_pair(sandbox)
    assert not (sandbox.var / "journal.json").exists()
    assert not list(sandbox.root.rglob(".reconciler-tmp-*"))

    del sandbox.env["RECONCILER_TEST_CRASH_AT"]
    final = sandbox.run("apply")
    assert final.returncode == 0, final.stderr
    assert sandbox.run("plan").returncode == 0
    assert hook_runs(log)[-1] == ("apply", new_revision)
    audit = sandbox.run("audit", "show", "--json").stdout
    # Before the journal exists, or once it is gone (committed), there is nothing to recover.
    assert ('"event": "recovery.completed"' in audit) == (step not in ("staged", "committing"))
    recoveries = [json.loads(line) for line in audit.splitlines() if "recovery.completed" in line]
    for record in recoveries:
        # Whatever the interrupted pass managed to audit, the recovery names every target.
        assert {t["path"] for t in record["targets"]} >= {
            str(sandbox.root / "data" / name) for name in ("key.pem", "cert.pem", "tls.pem")
        }
    assert '"event": "pass.succeeded"' in audit


def _recovery(box: Sandbox) -> tuple[object, object]:
    record = [r for r in audit(box) if r["event"] == "recovery.completed"][-1]
    return record["phase"], record["action"]


def test_a_crash_right_after_the_renames_completes_the_pass(sandbox: Sandbox, pki: Pki) -> None:
    """The journal is not written again after the swap: the targets, each holding its new
    content, mode and group, are what tells recovery the swap finished, so it completes."""
    log = install_record_hook(sandbox)
    assert sandbox.run("apply").returncode == 0
    change_everything(sandbox, pki)
    new_revision = revision_of(sandbox)
    crash_apply_at(sandbox, "swap-done")
    assert json.loads((sandbox.var / "journal.json").read_bytes())["phase"] == "prepared"
    status = json.loads(sandbox.run("status", "--json").stdout)
    assert status["interrupted_pass"] == {"revision": new_revision, "phase": "swapped"}
    assert ("apply", new_revision) not in hook_runs(log)

    assert sandbox.run("apply").returncode == 0
    assert hook_runs(log)[-1] == ("apply", new_revision)
    assert _recovery(sandbox) == ("swapped", "completed")
    assert sandbox.run("plan").returncode == 0


def test_a_crash_inside_the_renames_undoes_the_pass(sandbox: Sandbox, pki: Pki) -> None:
    log = install_record_hook(sandbox)
    assert sandbox.run("apply").returncode == 0
    old = sandbox.targets()
    change_everything(sandbox, pki)
    crash_apply_at(sandbox, "swap-first")
    status = json.loads(sandbox.run("status", "--json").stdout)
    assert status["interrupted_pass"]["phase"] == "prepared"
    runs = len(hook_runs(log))

    sandbox.env["RECONCILER_TEST_CRASH_AT"] = "recovered"
    assert sandbox.run("apply").returncode == 86
    assert sandbox.targets() == old
    assert len(hook_runs(log)) == runs
    assert _recovery(sandbox) == ("prepared", "undone")


def test_a_target_whose_mode_differs_after_the_renames_is_not_taken_as_swapped(
    sandbox: Sandbox, pki: Pki
) -> None:
    """Content alone does not say the swap finished: a new file with the old mode (a rename
    lost, say) is a partial swap, undone."""
    assert sandbox.run("apply").returncode == 0
    change_everything(sandbox, pki)
    crash_apply_at(sandbox, "swap-done")
    cert = sandbox.root / "data" / "cert.pem"
    cert.chmod(cert.stat().st_mode & 0o7777 ^ 0o004)
    sandbox.env["RECONCILER_TEST_CRASH_AT"] = "recovered"
    assert sandbox.run("apply").returncode == 86
    assert _recovery(sandbox) == ("prepared", "undone")


@pytest.mark.timeout(600)  # 8 to 24 rounds of 4 process starts; a shared 2-core machine is slow
def test_kill_9_at_random_moments_never_leaves_a_mixed_set(sandbox: Sandbox, pki: Pki) -> None:
    log = install_record_hook(sandbox)
    for n in range(30):
        sandbox.state.trust(f"ca-{n:02d}", devpki.make_ca(f"CA {n}").cert_pem)
    for n in range(30):
        sandbox.state.profile(f"relay-{n:02d}", f'url = "smtps://relay{n}.example.com"\n')
    assert sandbox.run("apply").returncode == 0
    states = [sandbox.targets()]
    rng = random.Random(1234)
    leaves = [pki.leaf, pki.leaf2]
    interrupted = 0
    # At least 8 kills, and more (up to 24) until 2 of them landed inside a pass: where a kill
    # lands depends on the machine's load, and a sweep whose kills all missed proves nothing.
    for attempt in range(24):
        if attempt >= 8 and interrupted >= 2:
            break
        sandbox.state.identity(pki, leaves[(attempt + 1) % 2])
        for n in rng.sample(range(30), 5):
            sandbox.state.profile(
                f"relay-{n:02d}", f'url = "smtps://relay{n}-{attempt}.example.com"\n'
            )
        interrupted += kill_an_apply_at_random(sandbox, rng)
        sandbox.env["RECONCILER_TEST_CRASH_AT"] = "recovered"
        assert sandbox.run("apply").returncode == 86
        del sandbox.env["RECONCILER_TEST_CRASH_AT"]
        now = sandbox.targets()
        converged = sandbox.run("plan").returncode == 0
        assert now == states[-1] or converged, f"attempt {attempt}: mixed set"
        assert_one_key_pair(sandbox)
        assert_no_readable_key_material(sandbox, pki)
        assert sandbox.run("apply").returncode == 0
        states.append(sandbox.targets())
    assert hook_runs(log)
    assert interrupted >= 2, f"only {interrupted} of 24 kills landed inside a pass"


FAULTS = [
    ("write:/data/cert.pem:ENOSPC", "cert.pem", "no space left"),
    ("rename:/data/tls.pem:EIO", "tls.pem", "input/output error"),
    ("write:/data/server-profiles.json:EROFS", "server-profiles.json", "read-only"),
    ("unlink:reconciler-partner-ca.crt:EACCES", "reconciler-partner-ca.crt", "permission denied"),
    ("write:/txn/:ENOSPC", "/txn/", "no space left"),
    ("write:journal.json:EIO", "journal.json", "input/output error"),
    ("mkdir:/txn/:EROFS", "/txn/", "read-only"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f[0] for f in FAULTS])
def test_io_error_at_any_write_fails_cleanly(
    fault: tuple[str, str, str], sandbox: Sandbox, pki: Pki
) -> None:
    spec, path_words, reason = fault
    assert sandbox.run("apply").returncode == 0
    before = sandbox.targets()
    change_everything(sandbox, pki)
    sandbox.env["RECONCILER_TEST_FAULT"] = spec
    failed = sandbox.run("apply")
    assert failed.returncode == 1
    assert path_words in failed.stderr, failed.stderr
    assert reason in failed.stderr, failed.stderr
    assert "previous state is back" in failed.stderr or "nothing was applied" in failed.stderr
    assert sandbox.targets() == before
    assert not list(sandbox.base.rglob(".reconciler-tmp-*"))
    assert not (sandbox.var / "journal.json").exists()
    del sandbox.env["RECONCILER_TEST_FAULT"]
    assert sandbox.run("apply").returncode == 0
    assert sandbox.run("plan").returncode == 0


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Path:
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48k,nr_inodes=64", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_filesystem_fails_the_pass_and_keeps_the_targets(
    sandbox: Sandbox, pki: Pki, tiny_filesystem: Path
) -> None:
    """ROOT on a real, nearly full file system: the swap hits ENOSPC and everything is restored."""
    root = tiny_filesystem
    (root / "data").mkdir()
    (root / "nginx").mkdir()
    sandbox.root_dir = root
    assert sandbox.run("apply").returncode == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    filler = root / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"x" * 1024)
        except OSError:
            pass
    before[filler] = filler.read_bytes()
    big_profile = (
        "".join(f"# {'x' * 60}\n" for _ in range(300)) + 'url = "smtps://big.example.com"\n'
    )
    sandbox.state.profile("big", big_profile)
    sandbox.state.identity(pki, pki.leaf2)
    failed = sandbox.run("apply")
    assert failed.returncode == 1
    assert "no space left" in failed.stderr, failed.stderr
    # The real file concerned is named, never a temp file next to it.
    assert f"{root}/" in failed.stderr, failed.stderr
    assert "reconciler-tmp" not in failed.stderr, failed.stderr
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_lock_makes_a_second_apply_wait_then_fail_naming_the_holder(sandbox: Sandbox) -> None:
    lock = RootLock(sandbox.var)
    with lock.held(1):
        result = sandbox.run("apply", "--lock-timeout", "0.5")
    assert result.returncode == 1
    assert f"process {os.getpid()}" in result.stderr
    assert sandbox.run("apply").returncode == 0


SLOW_HOOK = """#!/bin/sh
echo "start $(date +%s.%N)" >> "{log}"
sleep 0.3
n=$(ls "{state}/profiles" | wc -l)
printf 'url = "smtps://extra%s.example.com"\\n' "$n" > "{state}/profiles/extra-$n.toml"
echo "end $(date +%s.%N)" >> "{log}"
"""


def test_concurrent_applies_never_overlap_their_passes(sandbox: Sandbox) -> None:
    log = sandbox.base / "intervals.log"
    script = sandbox.base / "slow-hook.sh"
    script.write_text(SLOW_HOOK.format(log=log, state=sandbox.state.path))
    script.chmod(0o755)
    sandbox.hooks = HOOK.format(script=script)
    env = {**os.environ, "RECONCILER_CONFIG": str(sandbox.write_config())}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for process in processes:
        process.communicate(timeout=60)
        assert process.returncode == 0
    marks = [line.split() for line in log.read_text().splitlines()]
    assert len(marks) == 6, marks  # each apply found a change (the previous hook made one)
    intervals = [(float(marks[i][1]), float(marks[i + 1][1])) for i in range(0, len(marks), 2)]
    assert all(marks[i][0] == "start" and marks[i + 1][0] == "end" for i in range(0, 6, 2))
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end <= start
    assert_whole = sandbox.run("validate")
    assert assert_whole.returncode == 0


def test_stale_temporary_files_are_removed_at_start(sandbox: Sandbox) -> None:
    assert sandbox.run("apply").returncode == 0
    stale = sandbox.root / "data" / ".reconciler-tmp-key.pem.deadbeef"
    stale.write_bytes(b"half a key")
    orphan = sandbox.var / "txn" / "20260101T000000-abcdef"
    orphan.mkdir(parents=True)
    (orphan / "junk").write_bytes(b"x")
    assert sandbox.run("apply").returncode == 0
    assert not stale.exists()
    assert not orphan.exists()


def test_previous_generations_are_kept_and_bounded(sandbox: Sandbox, pki: Pki) -> None:
    for n in range(8):
        sandbox.state.profile("relay", f'url = "smtps://relay{n}.example.com"\n')
        assert sandbox.run("apply").returncode == 0
    generations = sorted((sandbox.var / "generations").iterdir())
    assert len(generations) == 5
    newest = generations[-1]
    journal = json.loads((newest / "journal.json").read_text())
    backup = next(e for e in journal["entries"] if e["path"].endswith("server-profiles.json"))[
        "backup"
    ]
    name, offset, length = backup.rsplit(":", 2)
    previous = (newest / name).read_bytes()[int(offset) : int(offset) + int(length)]
    assert b"relay6.example.com" in previous
    for path in (sandbox.var / "generations").rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0


def test_drift_is_told_from_a_desired_change(sandbox: Sandbox, pki: Pki) -> None:
    assert sandbox.run("apply").returncode == 0
    (sandbox.root / "data" / "server-profiles.json").write_text("{}\n")
    plan = json.loads(sandbox.run("plan", "--json").stdout)
    assert [(c["path"].rsplit("/", 1)[1], c["cause"]) for c in plan["changes"]] == [
        ("server-profiles.json", "drift")
    ]
    sandbox.state.profile("relay", 'url = "smtps://relay9.example.com"\n')
    plan = json.loads(sandbox.run("plan", "--json").stdout)
    assert [c["cause"] for c in plan["changes"]] == ["desired"]
    (sandbox.root / "data" / "smtp-inbound.json").unlink()
    applied = sandbox.run("apply")
    assert applied.returncode == 0
    events = [
        json.loads(line) for line in sandbox.run("audit", "show", "--json").stdout.splitlines()
    ]
    corrected = [e for e in events if e["event"] == "drift.corrected"]
    assert [e["path"].rsplit("/", 1)[1] for e in corrected] == ["smtp-inbound.json"]


def _another_process_gets_the_lock(var_dir: Path) -> bool:
    code = (
        "import sys; from pathlib import Path; from reconciler.txn.lock import RootLock\n"
        "from reconciler.errors import LockHeldError\n"
        "try:\n    RootLock(Path(sys.argv[1])).acquire(0)\nexcept LockHeldError:\n    sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(var_dir)], cwd=REPO, timeout=60, check=False
    )
    assert done.returncode in (0, 3), done
    return done.returncode == 0


def test_a_full_var_dir_never_leaves_the_lock_held(tiny_filesystem: Path) -> None:
    """Writing the holder's PID fails on a full disk: the lock is still ours, and releasable."""
    lock = RootLock(tiny_filesystem)
    with (tiny_filesystem / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"x" * 4096)
        except OSError:
            pass
    for _ in range(2):
        lock.acquire(1)
        assert not _another_process_gets_the_lock(tiny_filesystem), "held, yet not exclusive"
        lock.release()
        assert _another_process_gets_the_lock(tiny_filesystem), "released, yet still held"


def test_rollback_puts_back_a_link_someone_left_where_a_target_was(
    sandbox: Sandbox, pki: Pki, tmp_path: Path
) -> None:
    """Drift made key.pem a link; the next pass fails its hook: the link comes back as it was."""
    assert sandbox.run("apply").returncode == 0
    elsewhere = tmp_path / "operator-key.pem"
    elsewhere.write_bytes(pki.leaf.key_pem)
    elsewhere.chmod(0o600)
    key = sandbox.root / "data" / "key.pem"
    key.unlink()
    key.symlink_to(elsewhere)
    sandbox.hooks = HOOK.format(script="/bin/false")
    sandbox.state.identity(pki, pki.leaf2)
    assert sandbox.run("apply").returncode == 1
    assert key.is_symlink()
    assert os.readlink(key) == str(elsewhere)


@pytest.mark.parametrize("planted", ["data", "data/secrets"])
def test_a_link_planted_after_planning_is_never_written_through(
    sandbox: Sandbox, pki: Pki, planted: str
) -> None:
    """Planning refuses a link it finds; one that appears between planning and the swap (a
    race) is refused by the swap itself, which reaches each directory without following one."""
    from reconciler.errors import ApplyError
    from reconciler.reconcile import make_plan
    from reconciler.txn import Transaction

    keys = sandbox.base / "keys"
    keys.mkdir()
    (keys / "pw").write_bytes(b"a-relay-password\n")
    sandbox.extra += f'key_dirs = ["{keys}"]\n'
    sandbox.state.profile("relay", f'url = "smtps://r.example.com"\npassword_file = "{keys}/pw"\n')
    (sandbox.root / "data" / "secrets").mkdir(mode=0o700)
    settings = sandbox.settings()
    planned = make_plan(settings)
    assert planned.plan is not None
    txn = Transaction.prepare(settings.var_dir, planned.plan, root=settings.root)
    victim = sandbox.base / "victim"
    victim.mkdir()
    link = sandbox.root / planted
    link.rename(sandbox.base / "moved-away")
    link.symlink_to(victim)
    with pytest.raises(ApplyError, match=f"{link}: is a symbolic link"):
        txn.swap()
    assert list(victim.iterdir()) == []


def test_a_target_that_vanishes_before_its_backup_is_read_is_not_backed_up_as_empty(
    tmp_path: Path,
) -> None:
    """Between the look at a target and the read of its backup, someone removes it: a rollback
    must then put nothing there, not an empty file."""
    from reconciler.support.confined import ConfinedDirs
    from reconciler.txn.staging import _GONE, _current

    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "gone").write_bytes(b"gone")
    with ConfinedDirs([tmp_path]) as dirs:
        where = dirs.of(tmp_path)
        (tmp_path / "gone").unlink()  # after its lstat said 4 bytes
        assert _current(where, "gone", 4, 100) is _GONE
        assert _current(where, "empty", 0, 100) == b""
        assert _current(where, "empty", 0, 100) is not _GONE
