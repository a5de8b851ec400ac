"""Hook and check runner (after the swap, before verification): argv, own process group, bounded.

Hooks are host configuration (the settings file), never desired state: what a git push can change
must not choose what runs as root.

Contract:

* a hook runs when its `on` meets the kinds the pass changed, once per pass, in settings-file order;
* `check` (optional) runs first; when it fails, `run` is not started;
* each runs bounded (`reconciler.support.process`): no shell, its own process group, its output
  tail kept for the audit log's `hook.ran`, its whole tree killed on timeout; with the
  reconciler's environment plus `RECONCILER_CHANGED`, `RECONCILER_REVISION`, `RECONCILER_ROOT`
  and `RECONCILER_PHASE`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from reconciler.config import HookSettings
from reconciler.support.process import run_bounded

HookPhase = Literal["apply", "rollback"]
Step = Literal["check", "run"]


@dataclass(frozen=True, slots=True)
class HookResult:
    """One command's run: what the audit log's `hook.ran` records."""

    hook: str
    step: Step
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
    """The documented variables a hook sees on top of the reconciler's own environment."""
    return {
        "RECONCILER_CHANGED": ",".join(kinds),
        "RECONCILER_REVISION": revision,
        "RECONCILER_ROOT": root,
        "RECONCILER_PHASE": phase,
    }


def run_command(
    name: str,
    step: Step,
    argv: Sequence[str],
    *,
    phase: HookPhase,
    env: Mapping[str, str],
    timeout_s: float,
    started: Callable[[], object] | None = None,
) -> HookResult:
    """One step of a hook, run bounded (`started`: see run_bounded)."""
    done = run_bounded(argv, env=env, timeout_s=timeout_s, started=started)
    return HookResult(
        name, step, phase, done.exit_code, done.duration_ms, done.output_tail, done.error
    )


def run_hook(
    hook: HookSettings,
    *,
    phase: HookPhase,
    env: Mapping[str, str],
    started: Callable[[], object] | None = None,
) -> list[HookResult]:
    """`check` (when set), then `run` if the check passed. Results of what ran, in order.
    `started` is called once the first of them runs (see run_bounded)."""
    steps: list[tuple[Step, Sequence[str]]] = [("run", hook.run)]
    if hook.check is not None:
        steps.insert(0, ("check", hook.check))
    results: list[HookResult] = []
    for step, argv in steps:
        result = run_command(
            hook.name,
            step,
            argv,
            phase=phase,
            env=env,
            timeout_s=hook.timeout_s,
            started=None if results else started,
        )
        results.append(result)
        if not result.ok:
            break  # a failed check: its run step is not started
    return results
    results.append(
        run_command(
            hook.name,
            "run",
            hook.run,
            phase=phase,
            env=env,
            timeout_s=hook.timeout_s,
            started=started if hook.check is None else None,
        )
    )
    return results
