"""The toolbox the adapters share, one public module each: durable file primitives and
the safe reader for files others control (`fsio`), directories worked in without following a
link inside them (`confined`), running a command bounded (`process`), the one
output boundary every byte leaving the process goes through (`redact`), and the operational log
(`logging`). `devpki`, throwaway PKI for the demo, tests and benchmarks, lives here too; no runtime
module imports it (an import-linter contract).
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.support import confined, fsio, logging, process, redact

__all__ = ["confined", "fsio", "logging", "process", "redact"]
__getattr__ = lazy_exports(
    __name__,
    {"confined": None, "fsio": None, "logging": None, "process": None, "redact": None},
)
