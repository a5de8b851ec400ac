"""The operator's hooks and checks: which hooks a pass's changes trigger, the environment
they see, and each step run bounded (`support.process`). Hooks come from the settings file, never
from the desired state: what a git push can change must not choose what runs as root.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.hooks.runner import HookPhase, HookResult, hook_environment, hooks_for, run_hook

__all__ = ["hook_environment", "HookPhase", "HookResult", "hooks_for", "run_hook"]
__getattr__ = lazy_exports(
    __name__,
    {
        "HookPhase": "runner",
        "HookResult": "runner",
        "hook_environment": "runner",
        "hooks_for": "runner",
        "run_hook": "runner",
    },
)
