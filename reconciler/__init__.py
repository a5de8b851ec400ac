"""reconciler: keeps a mail gateway's TLS files equal to a desired state, atomically and audited.

The package is one subpackage per subsystem (docs/architecture.md draws them): `cli` over
`daemon` over `reconcile` over the adapters (`gateway`, `source`, `txn`, `truststore`, `audit`,
`probe`, `hooks`) over `config`, `support` and the pure `core`. Each subpackage exports in
`__all__` what the others may use, and loads it only when it is first used (`lazy_exports`), so
that importing a package costs nothing until something of it is needed.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str | None]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: each exported name is imported from its submodule
    (`exports[name]`; None: the name is a public submodule itself) on first use and kept on the
    package (PEP 562)."""

    def __getattr__(name: str) -> object:  # noqa: N807 - the PEP 562 name Python looks up
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        submodule = exports[name]
        if submodule is None:
            value: object = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
