"""What a command needs to exist before it reads or writes anything: ROOT, STATE, the var dir.

A command that would leave files behind for a setup that cannot work (a var dir that is a
file, `apply` on a host where neither STATE nor ROOT exists) stops first, with one line naming
the setting, the path and what is wrong with it, and nothing is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import SettingsError

if TYPE_CHECKING:
    from reconciler.config import Settings

__all__ = ["check"]

#: The commands that read or write the var dir.
_USES_VAR_DIR = frozenset({"plan", "apply", "run", "status", "suspend", "resume", "audit"})
#: The commands that plan against ROOT: a plan for a ROOT that does not exist can never apply.
_NEEDS_ROOT = frozenset({"plan", "apply"})
#: `apply` writes the var dir's records and the audit log for a desired state: it must exist.
_NEEDS_STATE = frozenset({"apply"})


def _problem(path: Path) -> str | None:
    """Why `path` cannot serve as an existing directory (None: it can)."""
    if path.is_dir():
        return None
    return "is not a directory" if os.path.lexists(path) else "does not exist"


def check(command: str, settings: Settings, config: Path | None) -> None:
    """Raise SettingsError when `command` cannot work with these settings' paths."""
    if command in _USES_VAR_DIR:
        _check_var_dir(settings.var_dir, "var_dir")
        audit_dir = settings.audit_path.parent
        if settings.audit_log is not None:
            _check_var_dir(audit_dir, "audit_log")
    unchanged = "; nothing was changed" if command == "apply" else ""
    if command in _NEEDS_ROOT and (why := _problem(settings.root)) is not None:
        raise SettingsError(
            f"root {settings.root}: {why} (setting `root`{_source(config)}){unchanged}"
        )
    if command in _NEEDS_STATE and (why := _problem(settings.state_dir)) is not None:
        raise SettingsError(
            f"state_dir {settings.state_dir}: {why} (setting `state_dir`{_source(config)})"
            f"{unchanged}"
        )


def _check_var_dir(path: Path, setting: str) -> None:
    """The var dir may be missing (a pass creates it) but not be something else: a file there
    would make every record fail with an error that names a file inside it."""
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = path if probe == path else f"{path} (at {probe})"
        raise SettingsError(f"{setting} {where}: is not a directory (setting `{setting}`)")


def _source(config: Path | None) -> str:
    from reconciler.config import config_path

    found = config_path(config)
    return f" in {found}" if found is not None else ", no settings file: the default"
