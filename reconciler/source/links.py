"""Pins the links a desired state is read through (STATE, `..data`, key_dirs) and its git revision.

GitOps tooling replaces a desired state by swapping a link:

* a git-sync worktree: STATE itself is a link swapped by rename, the old worktree deleted at once;
* a Kubernetes ConfigMap/Secret volume: top-level links point into `..data`, itself a link to a
  `..TIMESTAMP` directory, swapped by rename, the old directory deleted right after.

So a reader resolves each link once, reads through what it resolved, and checks at the end that
no link moved (`SnapshotMovedError` otherwise: the state is in transit, read it again).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.support.fsio import read_safe

K8S_DATA = "..data"
RETRIES = 8
#: First pause between reads of a state in transit; doubles each time (about 2.5 s in all).
RETRY_PAUSE_S = 0.01


class SnapshotMovedError(Exception):
    """The desired state changed under the reader: read it again."""


def inside(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or lies under it (both real paths)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


@dataclass(frozen=True, slots=True)
class PinnedState:
    """STATE and its `..data` as resolved once, at the start of a read."""

    state: Path
    """STATE as configured (maybe a link)."""
    real: str
    """STATE resolved once."""
    data_real: str | None
    """`..data` inside STATE resolved once, for Kubernetes volumes."""

    @classmethod
    def pin(cls, state_dir: Path) -> PinnedState:
        real = os.path.realpath(state_dir)
        data_link = os.path.join(real, K8S_DATA)
        data_real = os.path.realpath(data_link) if os.path.islink(data_link) else None
        if data_real is not None and not inside(data_real, real):
            data_real = None  # a `..data` leading outside is no volume: what it holds is an escape
        return cls(state_dir, real, data_real)

    def check_unchanged(self) -> None:
        if os.path.realpath(self.state) != self.real:
            raise SnapshotMovedError("the desired-state link was swapped")
        data_link = os.path.join(self.real, K8S_DATA)
        if self.data_real is not None and os.path.realpath(data_link) != self.data_real:
            raise SnapshotMovedError("the ..data link was swapped")


class PinnedKeyDirs:
    """The key_dirs (real paths) and, for each read from that is a Kubernetes volume, its `..data`
    as first resolved: cert and key then come from one version of a mounted Secret."""

    def __init__(self, key_dirs: Sequence[Path]) -> None:
        self.dirs = [os.path.realpath(d) for d in key_dirs]
        self._data: dict[str, str] = {}

    def containing(self, path: str) -> str | None:
        """The key dir `path` is in, as written or else through its links; None if none."""
        key_dir = next((d for d in self.dirs if inside(os.path.abspath(path), d)), None)
        if key_dir is None:  # the path as written may name a link into a key dir
            key_dir = next((d for d in self.dirs if inside(os.path.realpath(path), d)), None)
        return key_dir

    def pin(self, key_dir: str) -> None:
        """Resolve `key_dir`'s `..data` now, once per read."""
        data_link = os.path.join(key_dir, K8S_DATA)
        if key_dir not in self._data and os.path.islink(data_link):
            self._data[key_dir] = os.path.realpath(data_link)

    def check_unchanged(self) -> None:
        for key_dir, data_real in self._data.items():
            if os.path.realpath(os.path.join(key_dir, K8S_DATA)) != data_real:
                raise SnapshotMovedError(f"the ..data link of {key_dir} was swapped")


_GIT_FILE_LIMIT = 1 << 16
_PACKED_REFS_LIMIT = 64 << 20


def _git_text(path: Path, limit: int = _GIT_FILE_LIMIT) -> str | None:
    """A git metadata file's text through the safe reader: a FIFO, device or link there (a
    hostile push) is no revision, never a hang or an unbounded read."""
    data = read_safe(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def git_revision(worktree: Path) -> str | None:
    """The commit checked out at `worktree`, read from .git without running git, or None."""
    dot_git = worktree / ".git"
    try:
        if dot_git.is_dir():
            git_dir = dot_git
        else:
            text = (_git_text(dot_git) or "").strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (worktree / text.removeprefix("gitdir:").strip()).resolve()
        head = (_git_text(git_dir / "HEAD") or "").strip()
        if not head.startswith("ref:"):
            return head if _is_sha(head) else None
        ref = head.removeprefix("ref:").strip()
        common = git_dir
        commondir = _git_text(git_dir / "commondir")
        if commondir is not None:
            common = (git_dir / commondir.strip()).resolve()
        for base in (git_dir, common):
            sha_text = _git_text(base / ref)
            if sha_text is not None:
                sha = sha_text.strip()
                return sha if _is_sha(sha) else None
        packed = _git_text(common / "packed-refs", _PACKED_REFS_LIMIT)
        for line in (packed or "").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _is_sha(sha):
                return sha
    except (OSError, ValueError):
        return None
    return None


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)
