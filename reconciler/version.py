"""The installed distribution: its version and where its shipped hooks, unit and examples are."""

from __future__ import annotations

from pathlib import Path

DISTRIBUTION = "mailgw-tls-reconciler"
"""The name on PyPI ("reconciler" there is an unrelated project); the command stays `reconciler`."""

_MARKER = "share/reconciler/systemd/reconciler.service"


def version() -> str:
    """The installed version, or "unknown" when run from a source tree that was never installed."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def share_dir() -> Path | None:
    """PREFIX/share/reconciler of the installed wheel (hooks/, systemd/), else the source tree's
    top directory when it holds hooks/ and systemd/; None when neither is found."""
    from importlib import metadata

    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.as_posix().endswith(_MARKER):
            unit = Path(str(entry.locate())).resolve()
            if unit.is_file():
                return unit.parent.parent
    source = Path(__file__).resolve().parent.parent
    if (source / "hooks").is_dir() and (source / "systemd" / "reconciler.service").is_file():
        return source
    return None
