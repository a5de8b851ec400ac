"""Faithful imitations of the directory layouts GitOps tools leave behind, for daemon tests.

Each layout publishes a whole desired state (relative path -> bytes) the way its tool does, with
the same system calls in the same order, so the daemon sees the same inotify events:

* `InPlaceCheckout`: `git pull` in a plain clone: files rewritten one by one in place, deleted
  files unlinked, then the branch ref moves to the new commit.
* `ConfigMapVolume`: the kubelet's AtomicWriter for a ConfigMap/Secret volume: a new
  `..YYYY_MM_DD_HH_MM_SS.N` directory, a `..data_tmp` link renamed over `..data`, top-level links
  into `..data` for each top-level name, and the old timestamped directory removed right after.
* `GitSyncWorktree`: git-sync v4: a new worktree under `.worktrees/HASH` (its `.git` file naming
  `.git/worktrees/HASH`, whose HEAD is the detached commit), the relative link swapped by
  renaming a temporary link over it, and the old worktree deleted at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

Files = Mapping[str, bytes]


def commit_of(files: Files) -> str:
    """A stand-in commit id: 40 hex digits that change whenever the content does."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()


class Layout(Protocol):
    name: str

    @property
    def state_dir(self) -> Path:
        """What the reconciler's `state_dir` setting names."""
        ...

    def push(self, files: Files) -> str | None:
        """Publish `files` as the whole desired state; returns the git commit, if there is one."""
        ...


class InPlaceCheckout:
    """A clone updated in place by `git pull`."""

    name = "git-checkout"

    def __init__(self, base: Path) -> None:
        self.root = base / "checkout"
        (self.root / ".git" / "refs" / "heads").mkdir(parents=True)
        (self.root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")

    @property
    def state_dir(self) -> Path:
        return self.root

    def push(self, files: Files) -> str | None:
        for rel, data in files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            # git checkout writes each changed file in place (unlink + create), one after another
            if path.exists() and path.read_bytes() == data:
                continue
            path.unlink(missing_ok=True)
            with path.open("wb") as handle:
                handle.write(data)
        for path in sorted(self.root.rglob("*"), reverse=True):
            rel = path.relative_to(self.root).as_posix()
            if rel.startswith(".git"):
                continue
            if path.is_file() and rel not in files:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        commit = commit_of(files)
        ref = self.root / ".git" / "refs" / "heads" / "main"
        lock = ref.with_name("main.lock")
        lock.write_text(commit + "\n")
        lock.rename(ref)
        return commit


class ConfigMapVolume:
    """A Kubernetes ConfigMap/Secret volume as the kubelet writes it."""

    name = "configmap-volume"

    def __init__(self, base: Path) -> None:
        self.root = base / "volume"
        self.root.mkdir()
        self._serial = 0

    @property
    def state_dir(self) -> Path:
        return self.root

    def push(self, files: Files) -> str | None:
        self._serial += 1
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{self._serial:09d}"
        new = self.root / stamp
        new.mkdir()
        for rel, data in files.items():
            path = new / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        data_link = self.root / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(stamp, tmp)
        os.rename(tmp, data_link)
        top = {rel.split("/", 1)[0] for rel in files}
        for name in sorted(top):
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        for entry in self.root.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in top:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.root / old)
        # a Secret/ConfigMap volume has no .git: the revision is the content digest
        return None


class GitSyncWorktree:
    """git-sync v4: ROOT/.worktrees/HASH and a relative link ROOT/LINK swapped by rename."""

    name = "git-sync-v4"

    def __init__(self, base: Path) -> None:
        self.root = base / "git"
        (self.root / ".git" / "worktrees").mkdir(parents=True)
        (self.root / ".worktrees").mkdir()
        self.link = self.root / "current"
        self._current: str | None = None

    @property
    def state_dir(self) -> Path:
        return self.link

    def push(self, files: Files) -> str | None:
        commit = commit_of(files)
        worktree = self.root / ".worktrees" / commit
        git_dir = self.root / ".git" / "worktrees" / commit
        git_dir.mkdir()
        (git_dir / "HEAD").write_text(commit + "\n")
        (git_dir / "commondir").write_text("../..\n")
        worktree.mkdir()
        (worktree / ".git").write_text(f"gitdir: ../../.git/worktrees/{commit}\n")
        for rel, data in files.items():
            path = worktree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        tmp = self.root / "tmp-link"
        os.symlink(f".worktrees/{commit}", tmp)
        os.rename(tmp, self.link)
        if self._current is not None and self._current != commit:
            shutil.rmtree(self.root / ".worktrees" / self._current)
            shutil.rmtree(self.root / ".git" / "worktrees" / self._current)
        self._current = commit
        return commit


LAYOUTS = (InPlaceCheckout, ConfigMapVolume, GitSyncWorktree)
