"""Reads one file of a pinned desired state: no links followed, size limit, content digest."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass

from reconciler.core.collect import error
from reconciler.core.desired import MAX_FILE_BYTES, Finding
from reconciler.core.evaluate import SourceFile
from reconciler.core.secret import KEY_MARKER
from reconciler.source.cache import SourceCache
from reconciler.source.certbot import Lineages
from reconciler.source.links import PinnedKeyDirs, PinnedState, SnapshotMovedError
from reconciler.support.fsio import RACY_NS, now_ns, read_up_to
from reconciler.support.redact import remember_key

_KEY_MARK = KEY_MARKER.encode()
# Never follows a link it was not told to resolve; never blocks on a FIFO someone put there.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# Reading must not write: without it, the first read of each new file (every file of a
# Kubernetes volume's next version) updates its access time, dirtying thousands of inodes a pass.
# The kernel allows it to the file's owner and to CAP_FOWNER only (EPERM otherwise).
_NOATIME = getattr(os, "O_NOATIME", 0)
# A first read this large takes any certificate or profile file whole.
_READ_BYTES = 16384
# What a listed folder is opened as: the files are then opened relative to it, so each open
# resolves one name, not the whole path, and every file comes from the folder that was listed.
DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECTORY


def strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class FileReader:
    """Reads files of one snapshot, collecting findings and the content digest. With a `cache`,
    a file whose identity is what it was at the last read is taken as read then."""

    def __init__(
        self, base: PinnedState, key_dirs: PinnedKeyDirs, cache: SourceCache | None = None
    ) -> None:
        self.base = base
        self.key_dirs = key_dirs
        self.lineages = Lineages()
        self.cache = cache
        self.findings: list[Finding] = []
        self.digest = hashlib.sha256()
        self._flags = _OPEN_FLAGS | _NOATIME

    def _open(self, path: str, dir_fd: int | None = None) -> int:
        """os.open for reading; without O_NOATIME from the first file it is refused for on."""
        try:
            return os.open(path, self._flags, dir_fd=dir_fd)
        except PermissionError as exc:
            if exc.errno != errno.EPERM or not self._flags & _NOATIME:
                raise
            self._flags = _OPEN_FLAGS  # not the owner, nor CAP_FOWNER: read as anyone does
            return os.open(path, self._flags, dir_fd=dir_fd)

    def load(
        self, real: str, shown: str, field: str | None, *, missing_ok: bool = False
    ) -> bytes | None:
        """The content of the regular file at `real` (shown as `shown`), or None with a finding."""
        found = self.load_file(real, shown, field, missing_ok=missing_ok)
        return None if found is None else found.data

    def load_file(
        self, real: str, shown: str, field: str | None, *, missing_ok: bool = False
    ) -> SourceFile | None:
        """`load`, as a SourceFile: the bytes with their digest."""
        cache = self.cache
        if cache is not None and cache.knows(os.path.dirname(real)):
            try:
                info = os.lstat(real)
            except OSError:
                pass  # opening it says what is wrong
            else:
                if (known := cache.lookup(real, shown, info)) is not None:
                    return self._counted(known)
        read_at = now_ns()
        try:
            fd = self._open(real)
        except FileNotFoundError as exc:
            if self.vanished():
                raise SnapshotMovedError(f"{shown} vanished while being read") from exc
            if not missing_ok:
                self.findings.append(
                    error(shown, field, "file does not exist", rule="file-missing")
                )
            return None
        except OSError as exc:
            self._unreadable(shown, field, exc)
            return None
        return self._read_open(fd, real, shown, field, read_at)

    def _read_open(
        self, fd: int, real: str, shown: str, field: str | None, read_at: int
    ) -> SourceFile | None:
        """The file just opened (closed here), or None with a finding."""
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self.findings.append(
                    error(shown, field, "not a regular file", rule="file-not-regular")
                )
                return None
            if info.st_size > MAX_FILE_BYTES:
                self.findings.append(
                    error(
                        shown,
                        field,
                        f"{info.st_size} bytes: over the 1 MiB limit",
                        rule="file-too-large",
                    )
                )
                return None
            # The size stat gave, plus one: a short read is the end of a regular file, so one
            # read does (thousands of files a pass); only a file that grew meanwhile loops.
            data = os.read(fd, info.st_size + 1)
            if len(data) > info.st_size:
                data = read_up_to(fd, MAX_FILE_BYTES, data)
        except OSError as exc:
            self._unreadable(shown, field, exc)
            return None
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:
            self.findings.append(error(shown, field, "over the 1 MiB limit", rule="file-too-large"))
            return None
        source = SourceFile(shown, data)
        if self.cache is not None:
            self.cache.keep(real, info, source, read_at)
        return self._counted(source)

    def load_listed(self, folder: ListedFolder, name: str, shown: str) -> SourceFile | None:
        """`load` for a file its folder's listing says is regular, opened relative to the folder
        (one name to resolve, not a path). Unless the cache may keep it, it is not fstat'ed for
        its type or size (a large part of many small reads): one read takes any file up to
        _READ_BYTES."""
        cache = self.cache
        if folder.reuse and cache is not None:
            try:
                info = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
            except OSError:
                pass  # opening it says what is wrong
            else:
                if (known := cache.lookup(f"{folder.real}/{name}", shown, info)) is not None:
                    return self._counted(known)
        read_at = now_ns() if folder.keep else 0
        try:
            fd = self._open(name, folder.fd)
        except OSError:
            return self.load_file(f"{folder.real}/{name}", shown, None)  # reports it
        if folder.keep:
            return self._read_open(fd, f"{folder.real}/{name}", shown, None, read_at)
        try:
            data = os.read(fd, _READ_BYTES)
            if len(data) == _READ_BYTES:
                data = read_up_to(fd, MAX_FILE_BYTES, data)
        except OSError as exc:
            self._unreadable(shown, None, exc)
            return None
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:
            return self.load_file(f"{folder.real}/{name}", shown, None)  # says how large
        return self._counted(SourceFile(shown, data))

    def listed(self, folder_fd: int, real: str) -> ListedFolder:
        """How to read the files of a folder just listed (see ListedFolder)."""
        cache = self.cache
        if cache is None:
            return ListedFolder(folder_fd, real, False, False)
        # A folder changed in the last moments (the next version of a Kubernetes volume, a
        # fresh checkout) holds files too new to keep by their identity: they are read
        # without an fstat each.
        settled = now_ns() - os.fstat(folder_fd).st_ctime_ns >= RACY_NS
        return ListedFolder(folder_fd, real, cache.knows(real), settled)

    def _unreadable(self, shown: str, field: str | None, exc: OSError) -> None:
        """A finding: `shown` exists but cannot be opened or read."""
        self.findings.append(
            error(shown, field, f"cannot be read: {strerror(exc)}", rule="file-unreadable")
        )

    def _counted(self, source: SourceFile) -> SourceFile:
        """`source` as read, counted into the content digest (the revision without git): the
        path shown, the length and the bytes, so no two states hash alike by moving bytes."""
        data = source.data
        assert data is not None
        update = self.digest.update
        update(b"%s\0%d\0" % (source.path.encode("utf-8", "surrogateescape"), len(data)))
        update(data)
        if _KEY_MARK in data:
            remember_key(data)  # a key file, or a manifest with one inline: never echoed
        return source

    def vanished(self) -> bool:
        """Whether the snapshot moved (a file that disappears then is in transit, not missing)."""
        try:
            self.base.check_unchanged()
            self.key_dirs.check_unchanged()
            self.lineages.check_unchanged()
        except SnapshotMovedError:
            return True
        return not os.path.isdir(self.base.real)


@dataclass(frozen=True, slots=True)
class ListedFolder:
    """A folder being read file by file: open as `fd`, at real path `real`."""

    fd: int
    real: str
    reuse: bool
    """Whether its files may be taken from the cache by their identity."""
    keep: bool
    """Whether what is read there is kept by its identity (which costs an fstat per file)."""
