"""The directories the reconciler owns under ROOT: never a link, and their modes kept.

`ROOT/data`, `ROOT/nginx` and `ROOT/data/secrets` are the reconciler's to create. Another
program may put a link (or a file) where one of them belongs: a pass then reads, writes and
deletes nothing through it (`inspect_root` says so, naming it, before anything is looked at). Their
modes are kept too: `data/secrets` is 0700 (0750 where keys are group-readable), and no one of
them is writable by every user.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.layout import RootLayout
from reconciler.gateway.credentials import secrets_mode
from reconciler.support import fsio
from reconciler.support.confined import ConfinedDir

__all__ = ["DirMode", "RootDirs", "inspect_root", "set_dir_modes"]


@dataclass(frozen=True, slots=True)
class DirMode:
    """A directory whose mode is not the one the reconciler keeps."""

    path: str
    mode: int
    wanted: int

    def __str__(self) -> str:
        return f"{self.path}: mode {self.mode:04o}, will be {self.wanted:04o}"


@dataclass(frozen=True, slots=True)
class RootDirs:
    """What a pass found of ROOT's directories."""

    refused: tuple[str, ...] = ()
    """Why the pass must not go on: a link (or a file) where a directory belongs, named."""
    modes: tuple[DirMode, ...] = ()


def inspect_root(root: Path, key_mode: int) -> RootDirs:
    """ROOT's directories as they are (nothing is changed, nothing read through a link)."""
    layout = RootLayout(Path(root))
    refused: list[str] = []
    modes: list[DirMode] = []
    for directory in (layout.data, layout.nginx, layout.secrets):
        if directory == layout.secrets and refused:
            break  # data/ itself is refused: what is under it is not looked at
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            continue  # made when a pass needs it
        except OSError as exc:
            refused.append(fsio.describe(exc, directory))
            continue
        if stat.S_ISLNK(info.st_mode):
            refused.append(
                f"{directory}: is a symbolic link (to {os.readlink(directory)}), where the "
                "reconciler's directory belongs: not followed, so nothing is read, written or "
                "deleted through it; remove it and the next pass makes the directory"
            )
        elif not stat.S_ISDIR(info.st_mode):
            refused.append(
                f"{directory}: is {fsio.kind_of(info.st_mode)} where the reconciler's "
                "directory belongs; move it away and the next pass makes the directory"
            )
        else:
            mode = info.st_mode & 0o7777
            wanted = secrets_mode(key_mode) if directory == layout.secrets else mode & ~0o002
            if mode != wanted:
                modes.append(DirMode(str(directory), mode, wanted))
    return RootDirs(tuple(refused), tuple(modes))


def set_dir_modes(root: Path, modes: tuple[DirMode, ...]) -> list[str]:
    """Give each directory its mode (reached from ROOT without following a link); a sentence
    per directory changed, for the audit log. OSError when one cannot be changed."""
    done = []
    for found in modes:
        directory = ConfinedDir.open(Path(found.path), Path(root))
        try:
            os.fchmod(directory.fd, found.wanted)
        finally:
            directory.close()
        done.append(f"{found.path} had mode {found.mode:04o}: set to {found.wanted:04o}")
    return done
