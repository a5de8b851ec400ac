"""What a pass did, seen from outside: recording hooks, the audit log, kills, leaked secrets."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from reconciler.daemon.inotify import DirectoryWatches
from tests.helpers import REPO
from tests.helpers.sandbox import Sandbox

#: Where RECONCILER_TEST_CRASH_AT can stop a pass dead, in the order a pass reaches them.
CRASH_POINTS = [
    "staged",
    "journal-prepared",
    "swap-first",
    "swap-done",
    "swapped",
    "refreshed",
    "hooks-done",
    "committing",
]


HOOK = """\
[[hooks]]
name = "record"
on = ["identity", "console", "smtp_inbound", "trust", "profiles"]
run = ["{script}"]
timeout_s = 30
"""

RECORD_HOOK = """#!/bin/sh
echo "$RECONCILER_PHASE $RECONCILER_REVISION $RECONCILER_CHANGED" >> "{log}"
"""


def crash_apply_at(box: Sandbox, step: str) -> None:
    """`apply`, stopped dead at `step` (one of CRASH_POINTS): what it left is what a crash
    leaves."""
    box.env["RECONCILER_TEST_CRASH_AT"] = step
    assert box.run("apply").returncode == 86
    del box.env["RECONCILER_TEST_CRASH_AT"]


def install_record_hook(box: Sandbox) -> Path:
    log = box.base / "hooks.log"
    script = box.base / "record-hook.sh"
    script.write_text(RECORD_HOOK.format(log=log))
    script.chmod(0o755)
    box.hooks = HOOK.format(script=script)
    return log


def hook_runs(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split()[:2]) for line in log.read_text().splitlines()]  # type: ignore[misc]


def revision_of(box: Sandbox) -> str:
    result = box.run("plan", "--json")
    return str(json.loads(result.stdout)["revision"])


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


RECORDER = """\
echo "$1 $RECONCILER_PHASE $RECONCILER_CHANGED $RECONCILER_REVISION $RECONCILER_ROOT" >> "{log}"
case "$RECONCILER_PHASE:$2" in
    apply:fail) echo "failing on purpose" ; exit 3 ;;
    apply:hang) sleep 1000 ;;
esac
exit 0
"""


class HookRunLog:
    """A hook script that appends `NAME PHASE CHANGED REVISION ROOT` per run to a log."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.log = box.base / "hook-runs.log"
        self.script = script(box.base / "recorder.sh", RECORDER.format(log=self.log))

    def hook(
        self, name: str, on: list[str], mode: str = "ok", check: str | None = None, timeout_s=30
    ) -> str:
        text = (
            f'[[hooks]]\nname = "{name}"\non = {json.dumps(on)}\n'
            f'run = ["{self.script}", "{name}", "{mode}"]\ntimeout_s = {timeout_s}\n'
        )
        if check is not None:
            text += f'check = ["{self.script}", "{name}-check", "{check}"]\n'
        return text

    def runs(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines()]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)


def audit(box: Sandbox) -> list[dict[str, object]]:
    path = box.var / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_one_key_pair(box: Sandbox) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = box.root / "data"
    key = serialization.load_pem_private_key((data / "key.pem").read_bytes(), None)
    leaf = x509.load_pem_x509_certificates((data / "cert.pem").read_bytes())[0]
    assert key.public_key() == leaf.public_key()
    assert (data / "tls.pem").read_bytes() == (data / "key.pem").read_bytes() + (
        data / "cert.pem"
    ).read_bytes()


def kill_an_apply_at_random(box: Sandbox, rng: random.Random) -> bool:
    """`kill -9` of a real `reconciler apply` at a random moment of its pass; whether the kill
    left the pass interrupted (its journal in var_dir), which the next start must resolve.

    The moment is drawn once the pass has begun (its `pass.started` is in the audit log), so a
    kill never lands before the process did anything, and within as long again as the last
    whole pass took (from the audit log), so that it lands inside the pass or just after it.
    A pass takes milliseconds: the audit log's write is seen through inotify on var_dir, as it
    happens, not by polling, whose interval alone would put most kills after the pass."""
    audit_path = box.var / "audit.jsonl"
    started = _count_started(audit_path)
    window = 1.5 * _last_pass_seconds(box)
    env = {**os.environ, "RECONCILER_CONFIG": str(box.write_config())}
    watches: DirectoryWatches[str] = DirectoryWatches()
    watches.add("var", str(box.var))
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while _count_started(audit_path) <= started and process.poll() is None:
                assert time.monotonic() < deadline, "the apply did not begin its pass in 60 s"
                # A write in var_dir, or a second gone by (an apply that exits writes nothing).
                select.select([watches], [], [], 1.0)
                watches.read()
            time.sleep(rng.uniform(0.0, window))  # a random moment to kill at: the point
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    finally:
        watches.close()
    return (box.var / "journal.json").exists()


def _last_pass_seconds(box: Sandbox, default: float = 0.1) -> float:
    """How long the last pass in the audit log took, from its pass.started to its end."""
    from datetime import datetime

    if not (box.var / "audit.jsonl").exists():
        return default
    started = None
    took = default
    for record in audit(box):
        at = datetime.fromisoformat(str(record["ts"]))
        if record["event"] == "pass.started":
            started = at
        elif record["event"] in ("pass.succeeded", "pass.failed") and started is not None:
            took = (at - started).total_seconds()
            started = None
    return took


def _count_started(audit: Path) -> int:
    try:
        return audit.read_bytes().count(b'"event":"pass.started"')
    except FileNotFoundError:
        return 0


def secret_haystacks(
    box: Sandbox, outputs: list[subprocess.CompletedProcess[str]]
) -> dict[str, str]:
    """Where no secret may appear: every command's output and every file under var_dir, by name.

    Staged targets and backups (txn/, generations/) hold the copies by design, being what a
    rollback restores: they are left out, and must be 0600 in 0700 directories."""
    found = {f"output of {r.args[3:]}": r.stdout + r.stderr for r in outputs}
    for path in box.var.rglob("*"):
        if not path.is_file():
            continue
        relative = path.relative_to(box.var)
        if relative.parts[0] in ("txn", "generations"):
            assert path.stat().st_mode & 0o077 == 0, path
            continue
        found[str(relative)] = path.read_text(errors="replace")
    return found
