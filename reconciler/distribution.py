"""The installed distribution: its version and where its shipped hooks, unit and examples are."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


class VersionAction(argparse.Action):
    """`--version`: print "reconciler VERSION" and exit 0 (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"reconciler {version()}")
        parser.exit(0)


class ShareDirAction(argparse.Action):
    """`--print-share-dir`: print the directory holding hooks/ and systemd/, exit 0 (1 if none)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        found = share_dir()
        if found is None:
            print("reconciler: no shipped hooks/ and systemd/ found", file=sys.stderr)
            parser.exit(1)
        print(found)
        parser.exit(0)
