"""The command line: the parser and start-up (`parser`, `startup`), each command's body
(`commands`), and the views that turn results into text and JSON for a person or a program: status,
the plan and its diff, the audit log, validation findings, the probe report. It is the only
package that prints; `run` hands over to the daemon and `apply` makes one pass.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.cli.startup import main

__all__ = ["main"]
__getattr__ = lazy_exports(
    __name__,
    {
        "main": "startup",
    },
)
