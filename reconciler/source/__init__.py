"""The desired state as files: pins the links STATE is read through (`..data`, a git-sync
worktree, key_dirs, certbot's live directory), reads every input file once within its limits
(no link out, no FIFO, no file over 1 MiB), composes a fleet gateway with its shared layers,
and hands the pure core bytes (`StateInput`). Nothing here judges the content; `core.evaluate`
does.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.source.cache import SourceCache
    from reconciler.source.fleet import fleet_root, gateways_of, shared_layers
    from reconciler.source.links import K8S_DATA
    from reconciler.source.state import read_snapshot

__all__ = [
    "fleet_root",
    "gateways_of",
    "K8S_DATA",
    "read_snapshot",
    "shared_layers",
    "SourceCache",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "read_snapshot": "state",
        "fleet_root": "fleet",
        "gateways_of": "fleet",
        "shared_layers": "fleet",
        "K8S_DATA": "links",
        "SourceCache": "cache",
    },
)
