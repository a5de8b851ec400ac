"""The daemon: the loop that decides when a pass runs (`loop`, on the pure `core.schedule`),
the watches whose events are hints (`watch`), what runs beside the loop under supervision
(`service`: systemd notify and watchdog, the prober, the pass reports), the HTTP endpoints
(`http`), the Prometheus metrics (`metrics`) and readiness. The pass itself is `reconcile`'s.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.daemon.loop import run_daemon
    from reconciler.daemon.readiness import from_status

__all__ = ["from_status", "run_daemon"]
__getattr__ = lazy_exports(
    __name__,
    {
        "run_daemon": "loop",
        "from_status": "readiness",
    },
)
