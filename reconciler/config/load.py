"""Where settings come from: flags > RECONCILER_* environment > TOML file > defaults, in one place.

`load_settings` is the loader: it builds `reconciler.config.model.Settings` (pydantic-settings) from
every source and reports a bad setting in one line. `quick_state_paths` answers the two settings
`validate` reads by the same precedence without importing pydantic-settings, which is a large
part of a command's start-up, wherever it can be sure to give the same answer (a GitOps
repository's CI: no settings file, no other setting in the environment);
tests/config/test_settings.py pins it to `load_settings` across flags, variables and files.
Importing this module is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.config.defaults import DEFAULT_CONFIG, DEFAULT_STATE_DIR
from reconciler.errors import SettingsError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from reconciler.config.model import Settings


#: RECONCILER_* variables that are not settings: the settings file's name, what a hook is given
#: (a hook may run `reconciler status`), and test fault injection (RECONCILER_TEST_*).
NOT_SETTINGS = frozenset(
    {"RECONCILER_CONFIG", "RECONCILER_REVISION", "RECONCILER_PHASE", "RECONCILER_CHANGED"}
)
#: The variables `quick_state_paths` reads itself; any other RECONCILER_* one needs the loader.
QUICK_VARIABLES = frozenset({"RECONCILER_CONFIG", "RECONCILER_STATE_DIR", "RECONCILER_KEY_DIRS"})
#: Prefixes of variables the test suite and CI set for themselves (fault injection, and which
#: tools a run must have): never settings.
_TEST_PREFIXES = ("RECONCILER_TEST_", "RECONCILER_REQUIRE_")


def _is_setting_variable(name: str) -> bool:
    """Whether an environment variable is meant as a setting (known or misspelt)."""
    return (
        name.upper().startswith("RECONCILER_")
        and name not in NOT_SETTINGS
        and not name.startswith(_TEST_PREFIXES)
    )


def config_path(explicit: Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The settings file in force: --config, then RECONCILER_CONFIG, then the default if present."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    from_env = env.get("RECONCILER_CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def quick_state_paths(
    config: Path | None, state: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[Path, tuple[Path, ...]] | None:
    """(state_dir, key_dirs) exactly as load_settings would give them, or None: load them.

    Answered only where no settings file is in force and no RECONCILER_* variable other than
    `QUICK_VARIABLES` is set; then the precedence is flag > environment > default (with no file,
    there is no file level). Anything else (a file, another variable, a value only pydantic
    would know how to read) is left to `load_settings`, which also reports a bad setting.
    """
    env = os.environ if environ is None else environ
    if config_path(config, env) is not None:
        return None
    # pydantic-settings matches variable names case-insensitively: any other spelling, or any
    # other setting, is left to it.
    if any(_is_setting_variable(n) and n not in QUICK_VARIABLES for n in env):
        return None
    state_dir = state
    if state_dir is None:
        from_env = env.get("RECONCILER_STATE_DIR")
        state_dir = DEFAULT_STATE_DIR if from_env is None else Path(from_env)
    key_dirs: tuple[Path, ...] = ()
    listed = env.get("RECONCILER_KEY_DIRS")
    if listed is not None:
        try:
            value = json.loads(listed)  # a list setting comes from the environment as JSON
        except ValueError:
            return None
        if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
            return None
        key_dirs = tuple(Path(d) for d in value)
    cwd = Path.cwd()
    return cwd / state_dir, tuple(cwd / d for d in key_dirs)


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Load settings from every source; raise SettingsError with one line naming the bad setting."""
    from pydantic import ValidationError

    from reconciler.config.model import build_settings

    path = config_path(config)
    if path is not None and not path.is_file():
        raise SettingsError(f"settings file {path}: not found or not a regular file")
    _check_environment()
    overrides = {key: value for key, value in flags.items() if value is not None}
    try:
        settings = build_settings(path, overrides)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, path)) from exc
    except (OSError, ValueError) as exc:  # TOML syntax errors and unreadable files
        where = f"settings file {path}" if path is not None else "settings"
        raise SettingsError(f"{where}: {exc}") from exc
    return _absolutise(settings, path)


def _check_environment() -> None:
    """An unknown RECONCILER_* variable (a misspelt setting, say one underscore where `__`
    nests) is an error: ignoring it would run with a default the operator meant to change."""
    from reconciler.config.model import Settings

    fields = Settings.model_fields
    unknown = []
    for name in sorted(os.environ):
        if not name.startswith("RECONCILER_") or not _is_setting_variable(name):
            continue
        top = name.removeprefix("RECONCILER_").lower().partition("__")[0]
        if top not in fields:
            unknown.append(name)
    if unknown:
        known = ", ".join(f"RECONCILER_{field.upper()}" for field in fields)
        raise SettingsError(
            f"environment: unknown setting variable {', '.join(unknown)} "
            f"(settings: {known}; nest with __, e.g. RECONCILER_VERIFY__CONSOLE)"
        )


def _one_line(exc: ValidationError, path: Path | None) -> str:
    where = f"settings file {path}" if path is not None else "settings"
    parts = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "(top level)"
        variable = "RECONCILER_" + "__".join(str(part) for part in error["loc"]).upper()
        if error["loc"] and variable in os.environ:
            name += f" (environment variable {variable})"
        if error["type"] == "extra_forbidden":
            parts.append(f"{name}: unknown setting")
        else:
            parts.append(f"{name}: {error['msg']}")
    return f"{where}: " + "; ".join(parts)


def _absolutise(settings: Settings, path: Path | None) -> Settings:
    """Make paths absolute, and hook and witness commands with a slash relative to the settings
    file."""
    base = path.parent.resolve() if path is not None else Path.cwd()

    def argv(command: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if command is None or "/" not in command[0] or Path(command[0]).is_absolute():
            return command
        return (str(base / command[0]), *command[1:])

    hooks = tuple(
        hook.model_copy(update={"run": argv(hook.run), "check": argv(hook.check)})
        for hook in settings.hooks
    )
    updates: dict[str, Any] = {
        "state_dir": Path.cwd() / settings.state_dir,
        "root": Path.cwd() / settings.root,
        "var_dir": Path.cwd() / settings.var_dir,
        "key_dirs": tuple(Path.cwd() / d for d in settings.key_dirs),
        "hooks": hooks,
        "audit": settings.audit.model_copy(update={"witness": argv(settings.audit.witness)}),
    }
    if settings.audit_log is not None:
        updates["audit_log"] = Path.cwd() / settings.audit_log
    if settings.trust_dir is not None:
        updates["trust_dir"] = Path.cwd() / settings.trust_dir
    return settings.model_copy(update=updates)
