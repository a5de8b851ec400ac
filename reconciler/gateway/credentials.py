"""The profiles' credential copies on disk (ROOT/data/secrets): listing, kind, their directory."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.core.desired import Kind
from reconciler.core.layout import CREDENTIAL_SUFFIXES, RootLayout
from reconciler.core.plan import Plan
from reconciler.core.render import Layout
from reconciler.errors import ApplyError
from reconciler.support import fsio
from reconciler.support.confined import ConfinedDir


def credentials_dir(root: Path | str) -> Path:
    """ROOT/data/secrets, where NAME.password and NAME.api_key are kept."""
    return RootLayout(Path(root)).secrets


def managed_credentials(layout: Layout) -> list[str]:
    """Every credential copy present (NAME.password, NAME.api_key), wanted or not: those no
    profile renders any more are deleted by the plan."""
    directory = str(credentials_dir(str(layout.root)))
    try:
        with os.scandir(directory) as listed:
            names = [e.name for e in listed if not e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(
        f"{directory}/{name}"
        for name in names
        if name.endswith(CREDENTIAL_SUFFIXES) and not name.startswith((".", fsio.TMP_PREFIX))
    )


def leftover_kind(path: str, layout: Layout) -> Kind:
    """The kind of a managed file that is no longer wanted: a credential copy or a trust file."""
    if path.rpartition("/")[0] == str(credentials_dir(str(layout.root))):
        return "profiles"
    return "trust"


def ensure_credentials_dir(plan: Plan, root: Path, key_mode: int, gid: int | None) -> None:
    """Create ROOT/data/secrets (0700, or 0750 with key_mode 0640) before a pass writes into it.

    Raises ApplyError naming the directory; nothing has been swapped yet then.
    """
    directory = credentials_dir(root)
    if not any(c.target is not None and c.path.startswith(f"{directory}/") for c in plan.changes):
        return
    mode = secrets_mode(key_mode)
    try:
        # Reached from ROOT without following a link: a planted data/secrets is refused.
        made = ConfinedDir.open(directory, Path(root), create_mode=mode)
        try:
            if gid is not None:
                os.fchown(made.fd, -1, gid)
            os.fchmod(made.fd, mode)
        finally:
            made.close()
        fsio.fsync_dir(directory.parent)
    except OSError as exc:
        raise ApplyError(fsio.describe(exc, directory)) from exc


def secrets_mode(key_mode: int) -> int:
    """The credential directory's mode: 0700, or 0750 where keys are group-readable (0640)."""
    return 0o750 if key_mode & 0o040 else 0o700
