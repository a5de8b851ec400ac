"""The hook runner and what a pass does with hooks: order, kinds, environment, timeout, rollback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.config.model import HookSettings
from reconciler.hooks.runner import hook_environment, hooks_for, run_command, run_hook
from reconciler.support.process import OUTPUT_TAIL_BYTES, is_dead, output_tail, wait_exit
from reconciler.support.redact import scrub
from tests.helpers.passes import HookRunLog, audit, revision_of, script
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki

ENV = hook_environment(("identity", "console"), "sha256:abc", "/opt/gateway", "apply")


def hook(name: str, on: tuple[str, ...], run: list[str], **more: object) -> HookSettings:
    return HookSettings.model_validate({"name": name, "on": on, "run": run, **more})


# -- choosing hooks ------------------------------------------------------------------------------


def test_hooks_for_keeps_settings_order_and_only_hooks_whose_kinds_changed() -> None:
    hooks = [
        hook("trust", ("trust",), ["true"]),
        hook("console", ("console", "identity"), ["true"]),
        hook("smtp", ("smtp_inbound",), ["true"]),
        hook("all", ("identity", "profiles"), ["true"]),
    ]
    chosen = hooks_for(hooks, ["identity", "trust"])
    assert [h.name for h in chosen] == ["trust", "console", "all"]
    assert hooks_for(hooks, ["profiles"]) == [hooks[3]]
    assert hooks_for(hooks, []) == []


def test_hook_environment_is_the_documented_four_variables() -> None:
    assert hook_environment(("identity", "trust"), "abc123", "/opt/gw", "rollback") == {
        "RECONCILER_CHANGED": "identity,trust",
        "RECONCILER_REVISION": "abc123",
        "RECONCILER_ROOT": "/opt/gw",
        "RECONCILER_PHASE": "rollback",
    }


# -- running one command -------------------------------------------------------------------------


def test_command_sees_environment_and_its_output_is_kept(tmp_path: Path) -> None:
    argv = [str(script(tmp_path / "env.sh", 'echo "$RECONCILER_CHANGED|$RECONCILER_PHASE"\n'))]
    result = run_command("env", "run", argv, phase="apply", env=ENV, timeout_s=30)
    assert result.ok
    assert result.exit_code == 0
    assert result.output_tail == "identity,console|apply\n"


def test_argv_is_not_run_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = run_command(
        "echo",
        "run",
        ["echo", f"$(touch {marker})", ";", "x"],
        phase="apply",
        env=ENV,
        timeout_s=30,
    )
    assert result.ok
    assert result.output_tail == f"$(touch {marker}) ; x\n"
    assert not marker.exists()


def test_non_zero_exit_is_a_failure_with_stderr_kept(tmp_path: Path) -> None:
    argv = [str(script(tmp_path / "fail.sh", "echo 'nginx: [emerg] bad' >&2\nexit 3\n"))]
    result = run_command("reload", "check", argv, phase="apply", env=ENV, timeout_s=30)
    assert not result.ok
    assert result.exit_code == 3
    assert "[emerg] bad" in result.output_tail
    assert result.describe() == "hook 'reload' (check) exited 3"


def test_missing_program_is_a_failure_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-hook")
    result = run_command("reload", "run", [missing], phase="apply", env=ENV, timeout_s=30)
    assert not result.ok
    assert result.exit_code is None
    assert result.error is not None
    assert missing in result.error
    assert "No such file" in result.error


def test_timeout_kills_the_hook_and_all_its_children(tmp_path: Path) -> None:
    """Children in the group and one that left it with setsid() are all killed."""
    pids_file = tmp_path / "pids"
    body = (
        f"sleep 1000 &\necho $! >> {pids_file}\n"
        f"sh -c 'sleep 1000 & echo $! >> {pids_file}; wait' &\necho $! >> {pids_file}\n"
        f"setsid sleep 1000 &\necho $! >> {pids_file}\n"
        f"echo $$ >> {pids_file}\necho ready >> {pids_file}.done\nwait\n"
    )
    argv = [str(script(tmp_path / "hang.sh", body))]
    result = run_command("hang", "run", argv, phase="apply", env=ENV, timeout_s=2)
    assert not result.ok
    assert result.exit_code is None
    assert result.error is not None
    assert "timed out after 2 s" in result.error
    assert "did not die" not in result.error
    assert (tmp_path / "pids.done").exists(), "the hook did not get to start its children"
    pids = [int(line) for line in pids_file.read_text().split()]
    assert len(pids) == 5
    for pid in pids:
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        assert is_dead(process), f"pid {pid} ({process.cmdline()}) survived the timeout"


def test_a_hook_that_leaves_a_daemon_behind_returns_when_it_exits(tmp_path: Path) -> None:
    """Output goes to a file, not a pipe: a background child holding it does not block us."""
    argv = [str(script(tmp_path / "daemon.sh", "sleep 1000 &\necho $!\necho started\n"))]
    result = run_command("start", "run", argv, phase="apply", env=ENV, timeout_s=60)
    left = int(result.output_tail.split()[0])
    try:
        assert result.ok
        assert result.output_tail.endswith("started\n")
        assert psutil.pid_exists(left)
    finally:
        os.kill(left, signal.SIGKILL)


def test_output_tail_is_the_last_4_kib_of_a_long_output(tmp_path: Path) -> None:
    # 3-byte characters with a 1-byte prefix: a byte cut lands inside a character.
    argv = ["python3", "-c", "import sys; sys.stdout.write('x' + '€' * 5000 + 'END')"]
    result = run_command("loud", "run", argv, phase="apply", env=ENV, timeout_s=30)
    encoded = result.output_tail.encode("utf-8")
    assert len(encoded) <= OUTPUT_TAIL_BYTES
    assert len(encoded) >= OUTPUT_TAIL_BYTES - 3
    assert result.output_tail.endswith("€€END")
    assert "\ufffd" not in result.output_tail


@given(st.binary(max_size=3 * OUTPUT_TAIL_BYTES))
def test_output_tail_never_exceeds_4096_utf8_bytes(data: bytes) -> None:
    with tempfile.TemporaryFile() as output:
        output.write(data)
        tail = output_tail(output)
    encoded = tail.encode("utf-8")
    assert len(encoded) <= OUTPUT_TAIL_BYTES
    assert "PRIVATE KEY-----" not in tail.upper()
    if len(data) <= OUTPUT_TAIL_BYTES // 4 and b"PRIVATE KEY-----" not in data.upper():
        # Short enough that even all-escaped bytes fit: nothing is cut.
        assert tail == scrub(data.decode("utf-8", "surrogateescape"))


def key_lines(pem: bytes) -> list[str]:
    return [line for line in pem.decode().splitlines() if "-----" not in line]


# Where the 4 KiB window starts, as an offset into the printed key (None: the whole key is in it).
KEY_CUTS = {
    "whole-key": lambda key: None,
    "in-begin-line": lambda key: 5,
    "in-body": lambda key: len(key) // 2,
    "in-end-dashes": lambda key: key.index(b"-----END") + 3,
    "in-end-mark": lambda key: key.index(b"PRIVATE KEY-----\n", 30),
}


@pytest.mark.parametrize("where", list(KEY_CUTS))
def test_output_tail_never_carries_private_key_material(pki: Pki, where: str) -> None:
    """A hook that prints tls.pem: the key inside the kept tail, or cut anywhere by it."""
    key = pki.leaf.key_pem
    cut = KEY_CUTS[where](key)
    after = b"after\n"
    if cut is None:
        printed = b"z" * 10_000 + b"before\n" + key + after
    else:
        # The window is the last 4096 bytes: make it start `cut` bytes into the key.
        fill = OUTPUT_TAIL_BYTES - (len(key) - cut) - len(after)
        printed = b"z" * 10_000 + key + b"a" * fill + after
    with tempfile.TemporaryFile() as output:
        output.write(printed)
        tail = output_tail(output)
    assert "PRIVATE KEY-----" not in tail
    for line in key_lines(key):
        assert line not in tail
    assert tail.endswith("after\n")
    assert "redacted]" in tail  # the marker itself may be cut by the window
    assert len(tail.encode()) <= OUTPUT_TAIL_BYTES


# -- check, then run ------------------------------------------------------------------------------


def test_failed_check_means_run_is_not_started(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    settings = hook("reload", ("console",), ["touch", str(marker)], check=["false"])
    results = run_hook(settings, phase="apply", env=ENV)
    assert [(r.step, r.exit_code) for r in results] == [("check", 1)]
    assert not marker.exists()


def test_passing_check_then_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    settings = hook("reload", ("console",), ["touch", str(marker)], check=["true"])
    results = run_hook(settings, phase="apply", env=ENV)
    assert [(r.step, r.exit_code) for r in results] == [("check", 0), ("run", 0)]
    assert marker.exists()


# -- through the real command line ---------------------------------------------------------------


def test_each_hook_runs_once_per_pass_in_order_for_its_kinds_only(
    sandbox: Sandbox, pki: Pki
) -> None:
    rec = HookRunLog(sandbox)
    sandbox.hooks = (
        rec.hook("profiles", ["profiles"])
        + rec.hook("console", ["identity", "console"])
        + rec.hook("trust", ["trust"])
        + rec.hook("everything", ["identity", "console", "smtp_inbound", "trust", "profiles"])
    )
    first = sandbox.run("apply")
    assert first.returncode == 0, first.stderr
    revision = revision_of(sandbox)
    changed = "identity,console,smtp_inbound,trust,profiles"
    root = str(sandbox.root)
    assert rec.runs() == [
        [name, "apply", changed, revision, root]
        for name in ("profiles", "console", "trust", "everything")
    ]

    rec.clear()
    sandbox.state.profile("relay", 'url = "smtps://relay2.example.com"\n')
    assert sandbox.run("apply").returncode == 0
    revision = revision_of(sandbox)
    assert rec.runs() == [
        ["profiles", "apply", "profiles", revision, root],
        ["everything", "apply", "profiles", revision, root],
    ]


def test_a_commit_that_changes_no_target_runs_no_hook(sandbox: Sandbox) -> None:
    rec = HookRunLog(sandbox)
    sandbox.hooks = rec.hook("everything", ["identity", "console", "smtp_inbound", "trust"])
    assert sandbox.run("apply").returncode == 0
    before = revision_of(sandbox)
    rec.clear()
    sandbox.state.write("gateway.toml", (sandbox.state.path / "gateway.toml").read_text() + "# x\n")
    sandbox.state.write("README.md", "what this repository is\n")
    assert revision_of(sandbox) != before
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    assert '"outcome": "no-change"' in result.stderr, result.stderr  # JSON logs: the summary record
    assert rec.runs() == []


@pytest.mark.parametrize(
    ("mode", "check", "says"),
    [
        ("fail", None, "hook 'reload' (run) exited 3"),
        ("hang", None, "hook 'reload' (run): timed out after 1 s"),
        ("ok", "fail", "hook 'reload' (check) exited 3; its run step was not started"),
    ],
    ids=["run-fails", "run-times-out", "check-fails"],
)
def test_failed_hook_restores_previous_files_and_reruns_hooks_for_rollback(
    sandbox: Sandbox, pki: Pki, mode: str, check: str | None, says: str
) -> None:
    assert sandbox.run("apply").returncode == 0
    before = sandbox.targets()
    rec = HookRunLog(sandbox)
    sandbox.hooks = (
        rec.hook("first", ["identity"])
        + rec.hook("reload", ["identity", "console"], mode, check, timeout_s=1)
        + rec.hook("last", ["identity"])
    )
    sandbox.state.identity(pki, pki.leaf2)
    revision = revision_of(sandbox)

    result = sandbox.run("apply")

    assert result.returncode == 1
    assert says in result.stderr
    assert "previous state is back" in result.stderr
    assert sandbox.targets() == before
    names = [(run[0], run[1]) for run in rec.runs()]
    applied = [("first", "apply")]
    applied += [("reload-check", "apply")] if check else [("reload", "apply")]
    # Rollback tells every hook of the pass about the old files, also those after the failure.
    rolled = [("first", "rollback")]
    rolled += [("reload-check", "rollback")] if check else []
    rolled += [("reload", "rollback"), ("last", "rollback")]
    assert names == applied + rolled
    records = audit(sandbox)
    events = [r["event"] for r in records if r["revision"] == revision]
    assert events[-2:] == ["rollback.completed", "pass.failed"]
    ran = [(r["hook"], r["step"], r["phase"]) for r in records if r["event"] == "hook.ran"]
    if check:
        assert ("reload", "run", "apply") not in ran
    assert sandbox.run("plan").returncode == 2  # the new state is still wanted, not applied


def test_first_apply_that_fails_leaves_root_as_empty_as_it_was(sandbox: Sandbox) -> None:
    rec = HookRunLog(sandbox)
    sandbox.hooks = rec.hook("reload", ["identity"], "fail")
    result = sandbox.run("apply")
    assert result.returncode == 1
    assert sandbox.targets() == {}
    assert [run[:2] for run in rec.runs()] == [["reload", "apply"], ["reload", "rollback"]]


def test_hook_output_tail_reaches_the_audit_log(sandbox: Sandbox) -> None:
    rec = HookRunLog(sandbox)
    sandbox.hooks = rec.hook("reload", ["identity"], "fail")
    sandbox.run("apply")
    failed = [r for r in audit(sandbox) if r["event"] == "hook.ran" and r["exit_code"] == 3]
    assert len(failed) == 1
    assert failed[0]["output_tail"] == "failing on purpose\n"
    assert failed[0]["phase"] == "apply"


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "without-pidfd"])
def test_wait_exit_returns_the_exit_code_or_times_out(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait on a pidfd, and Popen's own where the kernel has none (Linux before 5.3)."""
    if not pidfd:

        def no_pidfd(pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    quick = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    assert wait_exit(quick, 60) == 7
    slow = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            wait_exit(slow, 0.2)
        assert slow.poll() is None
    finally:
        slow.kill()
        slow.wait()
