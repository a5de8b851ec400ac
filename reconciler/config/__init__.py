"""Settings: the model (every setting, its type, default and check), the defaults, the
loader that reads flags > RECONCILER_* environment > TOML file > defaults and reports a bad
setting in one line, and `Settings`, what the rest of the program reads of them (`view`).
`validate` answers its two settings without importing pydantic-settings, and the daemon has them
checked in a child process (`apart`) so that it never loads pydantic-settings itself.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.config.apart import load_settings_apart
    from reconciler.config.load import config_path, load_settings, quick_state_paths
    from reconciler.config.view import HookSettings, Settings

__all__ = [
    "config_path",
    "HookSettings",
    "load_settings",
    "load_settings_apart",
    "quick_state_paths",
    "Settings",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "Settings": "view",
        "HookSettings": "view",
        "config_path": "load",
        "load_settings": "load",
        "load_settings_apart": "apart",
        "quick_state_paths": "load",
    },
)
