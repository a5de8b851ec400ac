"""Hook and check runner: argv without a shell, own process group, bounded time, output tail kept.

Hooks are host configuration (the settings file), never desired state: what a git push can change
must not choose what runs as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from reconciler.settings import HookSettings

OUTPUT_TAIL_BYTES = 4096
HookPhase = Literal["apply", "rollback"]


@dataclass(frozen=True, slots=True)
class HookResult:
    """One command's run: what the audit log's `hook.ran` records."""

    hook: str
    step: Literal["check", "run"]
    phase: HookPhase
    exit_code: int | None
    """None when it timed out or could not start."""
    duration_ms: int
    output_tail: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        what = f"hook {self.hook!r} ({self.step})"
        if self.error:
            return f"{what}: {self.error}"
        return f"{what} exited {self.exit_code}"


def hooks_for(hooks: Sequence[HookSettings], kinds: Sequence[str]) -> list[HookSettings]:
    """The hooks whose `on` meets the changed kinds, in settings-file order."""
    changed = set(kinds)
    return [hook for hook in hooks if changed.intersection(hook.on)]


def hook_environment(
    kinds: Sequence[str], revision: str, root: str, phase: HookPhase
) -> dict[str, str]:
    return {
        "RECONCILER_CHANGED": ",".join(kinds),
        "RECONCILER_REVISION": revision,
        "RECONCILER_ROOT": root,
        "RECONCILER_PHASE": phase,
    }


def run_command(
    name: str,
    step: Literal["check", "run"],
    argv: Sequence[str],
    *,
    phase: HookPhase,
    env: Mapping[str, str],
    timeout_s: float,
) -> HookResult:
    """Run argv in its own session; on timeout kill the whole process group."""
    started = time.monotonic()
    # Output goes to an unlinked temp file, not a pipe: a daemon the hook leaves behind must not
    # keep us waiting for an end-of-file that never comes.
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            reason = f"could not start {argv[0]}: {exc.strerror}"
            return HookResult(name, step, phase, None, _ms(started), "", reason)
        error = None
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.wait()
            error = f"timed out after {timeout_s:g} s; its process group was killed"
        size = output.seek(0, os.SEEK_END)
        output.seek(max(0, size - OUTPUT_TAIL_BYTES))
        tail = output.read().decode("utf-8", "replace")
    code = None if error else process.returncode
    return HookResult(name, step, phase, code, _ms(started), tail, error)


def run_hook(hook: HookSettings, *, phase: HookPhase, env: Mapping[str, str]) -> list[HookResult]:
    """`check` (when set), then `run` if the check passed. Results of what ran, in order."""
    results = []
    if hook.check is not None:
        check = run_command(
            hook.name, "check", hook.check, phase=phase, env=env, timeout_s=hook.timeout_s
        )
        results.append(check)
        if not check.ok:
            return results
    results.append(
        run_command(hook.name, "run", hook.run, phase=phase, env=env, timeout_s=hook.timeout_s)
    )
    return results


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
