"""A pass's files under VAR: staging its new and previous contents, target dirs, generations."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from reconciler.core.layout import CREDENTIAL_SUFFIXES, RootLayout
from reconciler.core.plan import OVERSIZED as OVERSIZED_DIGEST
from reconciler.core.plan import Change, digest
from reconciler.core.secret import KEY_MARKER
from reconciler.errors import ApplyError
from reconciler.support import fsio, redact
from reconciler.support.confined import ConfinedDir, ConfinedDirs
from reconciler.txn.journal import JOURNAL, LINK, NEW, OLD, OVERSIZED, Entry

STAGING = "txn"
GENERATIONS = "generations"
KEEP_GENERATIONS = 5


def stage(
    directory: Path, changes: Sequence[Change], dirs: ConfinedDirs, limit: int
) -> list[Entry]:
    """Write every new content to `NEW` and every current one to `OLD`, one file each.

    Two files rather than one per target: with thousands of trust entries, creating a file per
    target would be most of a cold pass; and the backups are made durable by one fsync. Entries
    refer to their bytes as `FILE:OFFSET:LENGTH`. The targets are read through `dirs`: no link
    inside ROOT is followed. A file larger than `limit` (see `core.plan.read_limit`) is not read
    nor kept: it is garbage to replace, and a rollback removes it. The secrets among the backups
    (a key, a credential) are what a rollback puts back and its hooks may print: the output
    boundary keeps them for as long as they are this pass's backups.
    """
    new, old = bytearray(), bytearray()
    entries = []
    backups: list[tuple[str, bytes]] = []
    for change in changes:
        target = Path(change.path)
        staged = None
        if change.target is not None:
            assert change.target.content is not None
            staged = f"{NEW}:{len(new)}:{len(change.target.content)}"
            new += change.target.content
        backup = None
        before_mode = before_gid = None
        before_sha = None
        found = _found(dirs, target)
        if found is not None:
            where, info = found
            if stat.S_ISLNK(info.st_mode):
                # Someone put a link where a target belongs (drift): a rollback puts it back.
                backup = LINK + where.readlink(target.name)
            elif not stat.S_ISREG(info.st_mode):
                # Not ours to read or delete (a FIFO would block a reader; a directory may hold
                # someone's files): the pass fails before anything is swapped, naming the path.
                raise ApplyError(
                    f"{target}: is {fsio.kind_of(info.st_mode)} where a {change.kind} target "
                    "file belongs; nothing was changed: move it away and the next pass writes "
                    "the file"
                )
            else:
                before_mode, before_gid = info.st_mode & 0o7777, info.st_gid
                current = _current(where, target.name, info.st_size, limit)
                if current is _GONE:
                    before_mode = before_gid = None  # gone meanwhile: nothing to put back
                elif current is None:
                    backup, before_sha = f"{OVERSIZED}{info.st_size}", OVERSIZED_DIGEST
                else:
                    backup = f"{OLD}:{len(old)}:{len(current)}"
                    old += current
                    before_sha = digest(current)
                    backups.append((change.path, current))
        entries.append(
            Entry(
                path=change.path,
                kind=change.kind,
                action=change.action,
                cause=change.cause,
                staged=staged,
                backup=backup,
                mode=change.mode,
                gid=change.target.gid if change.target else None,
                before_mode=before_mode,
                before_gid=before_gid,
                before_sha256=before_sha,
                after_sha256=change.after_sha256,
                secret=bool(change.target and change.target.secret),
            )
        )
    keep_secrets_redacted(backups)
    fsio.write_new(directory / NEW, bytes(new))
    fsio.write_new(directory / OLD, bytes(old))
    return entries


_GONE = b"gone"
"""What `_current` returns for a target that vanished between its lstat and its open."""


def _current(where: ConfinedDir, name: str, size: int, limit: int) -> bytes | None:
    """A regular target's content, None when it is larger than `limit` (not read), or _GONE
    when it is no longer there."""
    if size > limit:
        return None
    try:
        current = where.read(name, limit)
    except fsio.RefusedFileError:
        return None  # it grew past the limit meanwhile: garbage all the same
    return _GONE if current is None else current


def _found(dirs: ConfinedDirs, target: Path) -> tuple[ConfinedDir, os.stat_result] | None:
    """The directory a target is in and what is at the target (without following it), or None
    when nothing is there (its directory included)."""
    try:
        where = dirs.of(target.parent)
    except FileNotFoundError:
        return None
    info = where.lstat(target.name)
    return None if info is None else (where, info)


def keep_secrets_redacted(contents: Sequence[tuple[str, bytes]]) -> None:
    """Tell the output boundary which of these target contents (path, bytes) are secrets: key
    material anywhere, and the credential copies. They replace the previous pass's."""
    keys = [data for _, data in contents if KEY_MARKER.encode() in data.upper()]
    secrets = [
        data
        for path, data in contents
        if path.endswith(CREDENTIAL_SUFFIXES) and KEY_MARKER.encode() not in data.upper()
    ]
    redact.in_use("backups", keys=keys, secrets=secrets)


def holds_previous(entry: Entry, dirs: ConfinedDirs) -> bool:
    """Whether the target already is as it was before the pass (its previous generation)."""
    path, sha256 = Path(entry.path), entry.before_sha256
    found = _found(dirs, path)
    if entry.backup is not None and entry.backup.startswith(LINK):
        if found is None or not stat.S_ISLNK(found[1].st_mode):
            return False
        return found[0].readlink(path.name) == entry.backup.removeprefix(LINK)
    if found is None:
        return sha256 is None
    if sha256 is None:
        return False
    if entry.backup is not None and entry.backup.startswith(OVERSIZED):
        # Never swapped: still the file it found (which was not read, and is not now).
        info = found[1]
        return stat.S_ISREG(info.st_mode) and info.st_size == int(
            entry.backup.removeprefix(OVERSIZED)
        )
    # The previous content's size is all there is to read: a larger file is not it.
    size = int(entry.backup.rsplit(":", 1)[1]) if entry.backup is not None else 0
    return _holds(found, path.name, size, sha256, entry.before_mode, entry.before_gid)


def holds_new(entry: Entry, dirs: ConfinedDirs) -> bool:
    """Whether the target already is as the pass makes it: its new content, mode and group, or
    gone when the pass deletes it."""
    path = Path(entry.path)
    found = _found(dirs, path)
    if entry.staged is None:
        return found is None
    if found is None or entry.after_sha256 is None:
        return False
    size = int(entry.staged.rsplit(":", 1)[1])
    return _holds(found, path.name, size, entry.after_sha256, entry.mode, entry.gid)


def _holds(
    found: tuple[ConfinedDir, os.stat_result],
    name: str,
    size: int,
    sha256: str,
    mode: int | None,
    gid: int | None,
) -> bool:
    """Whether the file found is a regular one of `size` bytes at most holding `sha256`, with
    `mode` and `gid` (None: any)."""
    where, info = found
    if not stat.S_ISREG(info.st_mode):
        return False
    try:
        content = where.read(name, size)
    except OSError:
        return False
    if content is None or digest(content) != sha256:
        return False
    return (mode is None or info.st_mode & 0o7777 == mode) and (gid is None or info.st_gid == gid)


def ensure_target_dirs(root: Path) -> None:
    """ROOT/data and ROOT/nginx, created 0755 when missing (a fresh volume); ApplyError naming
    ROOT when ROOT itself is missing (a wrong `root` setting is not ours to create)."""
    if not root.is_dir():
        what = "is not a directory" if os.path.lexists(root) else "does not exist"
        raise ApplyError(f"ROOT {root}: {what} (setting `root`); nothing was changed")
    created = False
    for directory in RootLayout(root).target_dirs:
        if os.path.lexists(directory):
            continue
        try:
            directory.mkdir(mode=0o755)
            directory.chmod(0o755)  # whatever the umask: nginx and the services read it
        except OSError as exc:
            raise ApplyError(f"cannot create {fsio.describe(exc, directory)}") from exc
        created = True
    if created:
        try:
            fsio.fsync_dir(root)
        except OSError as exc:
            raise ApplyError(fsio.describe(exc, root)) from exc


def prune_generations(var_dir: Path, keep: int = KEEP_GENERATIONS) -> None:
    generations = var_dir / GENERATIONS
    if os.path.islink(generations):
        return  # not ours: nothing is deleted through a link someone put there
    try:
        names = sorted(p.name for p in generations.iterdir())
    except OSError:
        return
    for name in names[:-keep] if keep else names:
        shutil.rmtree(generations / name, ignore_errors=True)


def keep_generation(var_dir: Path, staging: Path) -> None:
    """Move a committed pass's staging directory under VAR/generations (the last few kept)."""
    generations = var_dir / GENERATIONS
    fsio.ensure_private_dir(generations)
    os.replace(staging, generations / staging.name)
    fsio.fsync_dir(generations)
    prune_generations(var_dir)


def remove_orphan_staging(var_dir: Path, keep: str | None) -> list[Path]:
    """Resolve staging directories no journal refers to: a committed pass (it holds its journal
    copy) becomes a generation; one that never wrote its journal is deleted, untouched targets."""
    removed: list[Path] = []
    if os.path.islink(var_dir / STAGING):
        # Not ours: nothing is moved or deleted through it; preparing a pass refuses it.
        return removed
    try:
        children = list((var_dir / STAGING).iterdir())
    except OSError:
        return removed
    for child in children:
        if child.name == keep:
            continue
        if (child / JOURNAL).is_file():
            keep_generation(var_dir, child)
        else:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed
