"""Reads one file of a pinned desired state: no links followed, size limit, content digest."""

from __future__ import annotations

import hashlib
import os
import stat

from reconciler.core.collect import error
from reconciler.core.desired import MAX_FILE_BYTES, Finding
from reconciler.core.secret import KEY_MARKER
from reconciler.source.certbot import Lineages
from reconciler.source.links import PinnedKeyDirs, PinnedState, SnapshotMovedError
from reconciler.support.fsio import read_up_to
from reconciler.support.redact import remember_key

_KEY_MARK = KEY_MARKER.encode()
# Never follows a link it was not told to resolve; never blocks on a FIFO someone put there.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# A first read this large takes any certificate or profile file whole.
_READ_BYTES = 16384


def strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class FileReader:
    """Reads files of one snapshot, collecting findings and the content digest."""

    def __init__(self, base: PinnedState, key_dirs: PinnedKeyDirs) -> None:
        self.base = base
        self.key_dirs = key_dirs
        self.lineages = Lineages()
        self.findings: list[Finding] = []
        self.digest = hashlib.sha256()

    def load(
        self, real: str, shown: str, field: str | None, *, missing_ok: bool = False
    ) -> bytes | None:
        """The content of the regular file at `real` (shown as `shown`), or None with a finding."""
        try:
            fd = os.open(real, _OPEN_FLAGS)
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
        return self._read_open(fd, shown, field)

    def _read_open(self, fd: int, shown: str, field: str | None) -> bytes | None:
        """The content of a file just opened (closed here), or None with a finding."""
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
        return self._counted(shown, data)

    def load_listed(self, path: str, shown: str) -> bytes | None:
        """`load` for a file its directory listing says is regular: no fstat for its type or
        size (most of the time of many small reads); one read takes any file up to _READ_BYTES."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return self.load(path, shown, None)  # the same failure again, reported by load
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
            return self.load(path, shown, None)  # says how large, as for any other file
        return self._counted(shown, data)

    def _unreadable(self, shown: str, field: str | None, exc: OSError) -> None:
        """A finding: `shown` exists but cannot be opened or read."""
        self.findings.append(
            error(shown, field, f"cannot be read: {strerror(exc)}", rule="file-unreadable")
        )

    def _counted(self, shown: str, data: bytes) -> bytes:
        """`data` read for `shown`, counted into the content digest (the revision without git):
        the path shown, the length and the bytes, so no two states hash alike by moving bytes."""
        self.digest.update(b"%s\0%d\0%s" % (os.fsencode(shown), len(data), data))
        if _KEY_MARK in data:
            remember_key(data)  # a key file, or a manifest with one inline: never echoed
        return data

    def vanished(self) -> bool:
        """Whether the snapshot moved (a file that disappears then is in transit, not missing)."""
        try:
            self.base.check_unchanged()
            self.key_dirs.check_unchanged()
            self.lineages.check_unchanged()
        except SnapshotMovedError:
            return True
        return not os.path.isdir(self.base.real)
