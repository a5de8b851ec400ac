"""The gateway's side of ROOT: what a pass observes at its targets (`observe`: digests, modes,
groups, looked at again only where needed), the directories it owns there (never a link,
modes kept), the profiles' credential copies under `data/secrets`, what the installed nginx
accepts for `ssl on;`, and the console's TLS verification after hooks. The paths themselves
are written once, in the pure `core.layout`, which rendering uses too.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.gateway.console import fingerprint_of, verify_console
    from reconciler.gateway.credentials import ensure_credentials_dir
    from reconciler.gateway.directories import DirMode, RootDirs, inspect_root, set_dir_modes
    from reconciler.gateway.nginx import detect_ssl_on
    from reconciler.gateway.observe import ObservationCache, Observations, TargetEvents

__all__ = [
    "DirMode",
    "inspect_root",
    "RootDirs",
    "set_dir_modes",
    "detect_ssl_on",
    "ensure_credentials_dir",
    "fingerprint_of",
    "ObservationCache",
    "Observations",
    "TargetEvents",
    "verify_console",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "ObservationCache": "observe",
        "Observations": "observe",
        "TargetEvents": "observe",
        "ensure_credentials_dir": "credentials",
        "DirMode": "directories",
        "RootDirs": "directories",
        "inspect_root": "directories",
        "set_dir_modes": "directories",
        "detect_ssl_on": "nginx",
        "fingerprint_of": "console",
        "verify_console": "console",
    },
)
