"""Settings: the model (every setting, its type, default and check), the defaults, and
the loader that reads flags > RECONCILER_* environment > TOML file > defaults and reports a bad
setting in one line. `validate` answers its two settings without importing pydantic-settings.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.config.load import config_path, load_settings, quick_state_paths
    from reconciler.config.model import HookSettings, Settings

__all__ = ["config_path", "HookSettings", "load_settings", "quick_state_paths", "Settings"]
__getattr__ = lazy_exports(
    __name__,
    {
        "Settings": "model",
        "HookSettings": "model",
        "config_path": "load",
        "load_settings": "load",
        "quick_state_paths": "load",
    },
)
