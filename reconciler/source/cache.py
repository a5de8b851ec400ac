"""What the last read found in each file of the desired state and key_dirs, kept by file identity.

A daemon reads the whole desired state at every pass (level-triggered: a lost event must not hide
a change), and with thousands of trust entries the reads are most of a pass. Like git's index,
this keeps for each file read the identity the file system gives it (device, inode, size, mtime,
ctime) and what was read: a pass that finds the same identity takes that instead of opening the
file (one lstat instead of an open, a read and a close). The whole state is still listed and
compared at every pass; what was derived from each file (the parsed and validated entry, its
rendering) is kept by its content in the core, so a file taken from here costs nothing more.

* A file whose status changed less than `RACY_NS` before it was read is not kept: the kernel
  stamps times with a coarse clock, so a second write within one tick could leave the identity
  unchanged ("racily clean").
* Each read of a whole state keeps only what it read (`begin` ... `end`): a Kubernetes volume or
  git-sync worktree, whose every update is a new directory of new files (no identity survives
  it), never makes it hold more than one state's worth.
* A pass that looks at everything (the daemon's start and periodic resync, `reconciler apply`)
  opens every file again (`begin(reuse=False)`) and keeps what it read for the passes after it.
"""

from __future__ import annotations

import os
import stat

from reconciler.core.evaluate import SourceFile
from reconciler.support.fsio import RACY_NS, StatKey, stat_key

__all__ = ["SourceCache"]


class SourceCache:
    """What one process's reads of its desired state found, for the next read."""

    __slots__ = ("_by_path", "_dirs", "_next_path", "_reuse")

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[StatKey, SourceFile]] = {}
        """Real path -> (identity, the file as read), from the last complete read."""
        self._next_path: dict[str, tuple[StatKey, SourceFile]] = {}
        self._dirs: frozenset[str] = frozenset()
        self._reuse = False

    def begin(self, *, reuse: bool) -> None:
        """A read of the whole state starts; `reuse`: whether a file whose identity is unchanged
        may be taken as last read, without opening it."""
        self._next_path = {}
        self._reuse = reuse

    def end(self) -> None:
        """The read is complete: what it read is what the next one may reuse."""
        self._by_path, self._next_path = self._next_path, {}
        self._dirs = frozenset(path.rpartition("/")[0] for path in self._by_path)

    def knows(self, directory: str) -> bool:
        """Whether a file of `directory` (a real path) may be taken by its identity: a directory
        the last read kept nothing of (the next version of a Kubernetes volume) is read without
        an lstat per file first."""
        return self._reuse and directory in self._dirs

    def lookup(self, path: str, shown: str, info: os.stat_result) -> SourceFile | None:
        """The file at real `path`, shown as `shown`, as last read, if `info` (its lstat now) is
        still the identity it had then."""
        if not self._reuse:
            return None
        found = self._by_path.get(path)
        if found is None or not stat.S_ISREG(info.st_mode) or found[0] != stat_key(info):
            return None
        source = found[1]
        if source.path != shown:
            return None
        self._next_path[path] = found
        return source

    def keep(self, path: str, info: os.stat_result, source: SourceFile, read_at_ns: int) -> None:
        """Remember `source`, read from real `path` (opened at `read_at_ns`, time.time_ns())
        while its fstat was `info`: unless its status changed too recently to be trusted."""
        if read_at_ns - info.st_ctime_ns >= RACY_NS:
            self._next_path[path] = (stat_key(info), source)
