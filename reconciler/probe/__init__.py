"""Outbound proof (`reconciler probe`): TCP, STARTTLS for smtp and the TLS handshake to
every server of every profile, bounded in time and in bytes, checked against the system store plus
the desired trust entries.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.probe.prober import ProbeResult, probe_desired, probe_profiles

__all__ = ["probe_desired", "probe_profiles", "ProbeResult"]
__getattr__ = lazy_exports(
    __name__,
    {
        "ProbeResult": "prober",
        "probe_desired": "prober",
        "probe_profiles": "prober",
    },
)
