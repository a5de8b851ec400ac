"""Linux inotify on single directories, read by the daemon's own loop: no threads.

The watches that need no subtree (the targets, the var dir, STATE's parent, a Kubernetes
volume's top level) are read here rather than through watchdog, whose threads (a reader, an
emitter and a dispatcher per watch) hand each event on to the next in Python. While a pass runs,
the events of its own writes (temp files, renames, the journal) would keep those threads busy,
competing with the pass for the interpreter; here they wait in the kernel's queue until the
loop looks, after the pass. The loop waits on `fileno()` with its wakeup pipe, so an event
wakes it directly.

The kernel's queue is bounded (`fs.inotify.max_queued_events`): when it overflows, `read`
reports it, and the caller treats every watch as having missed events.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["Change", "DirectoryWatches", "Kind"]

Kind = Literal["created", "deleted", "moved", "modified", "closed", "attrib", "gone", "overflow"]

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_ISDIR = 0x40000000

MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
)  # fmt: skip
"""What watchdog's filter let through for these watches: no opens, no reads."""

_KINDS: tuple[tuple[int, Kind], ...] = (
    (IN_CREATE, "created"),
    (IN_DELETE, "deleted"),
    (IN_MOVED_FROM | IN_MOVED_TO, "moved"),
    (IN_CLOSE_WRITE, "closed"),
    (IN_ATTRIB, "attrib"),
    (IN_MODIFY, "modified"),
    (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED, "gone"),
)
_HEADER = struct.Struct("iIII")
_BUFFER = 64 * 1024

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Change:
    """One event: what happened (`gone`: the watched directory itself went), to which path
    (the watched directory for `gone`, None for `overflow`), and whether it is a directory."""

    kind: Kind
    path: str | None
    is_directory: bool = False


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class DirectoryWatches(Generic[K]):
    """inotify watches, each on one directory (not its subtree), each under a key of the
    caller's. Several keys may watch one directory: the kernel has one watch for them."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd: int = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _os_error(None)
        self._fd = fd
        self._keys: dict[int, list[K]] = {}
        self._watches: dict[K, tuple[int, str]] = {}

    def fileno(self) -> int:
        return self._fd

    def add(self, key: K, path: str) -> None:
        """Watch the directory `path` for `key`; OSError when it cannot be (gone, not a
        directory, out of watches)."""
        if key in self._watches:
            self.remove(key)
        wd: int = self._libc.inotify_add_watch(self._fd, os.fsencode(path), MASK)
        if wd < 0:
            raise _os_error(path)
        self._keys.setdefault(wd, []).append(key)
        self._watches[key] = (wd, path)

    def remove(self, key: K) -> None:
        wd, _ = self._watches.pop(key)
        keys = self._keys.get(wd, [])
        if key in keys:
            keys.remove(key)
        if not keys:
            self._keys.pop(wd, None)
            self._libc.inotify_rm_watch(self._fd, wd)  # its IN_IGNORED then matches no key

    def read(self) -> list[tuple[K | None, Change]]:
        """Every event queued so far (none when there is none), with the key of its watch;
        an overflow comes with the key None."""
        found: list[tuple[K | None, Change]] = []
        while True:
            try:
                data = os.read(self._fd, _BUFFER)
            except BlockingIOError:
                return found
            found += self._parse(data)

    def _parse(self, data: bytes) -> list[tuple[K | None, Change]]:
        found: list[tuple[K | None, Change]] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                found.append((None, Change("overflow", None)))
                continue
            kind = next((k for bit, k in _KINDS if mask & bit), None)
            keys = self._keys.get(wd)
            if kind is None or not keys:
                continue  # a watch we removed: its IN_IGNORED
            entry = os.fsdecode(name)
            for key in keys:
                directory = self._watches[key][1]
                path = os.path.join(directory, entry) if entry and kind != "gone" else directory
                found.append((key, Change(kind, path, bool(mask & IN_ISDIR))))
            if mask & IN_IGNORED:  # the kernel dropped the watch (its directory went): so do we
                for key in self._keys.pop(wd):
                    if self._watches.get(key, (None, ""))[0] == wd:
                        del self._watches[key]
        return found

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # a descriptor that failed: nothing to keep
                os.close(self._fd)
            self._fd = -1
        self._keys.clear()
        self._watches.clear()


def _os_error(path: str | None) -> OSError:
    number = ctypes.get_errno()
    return OSError(number, os.strerror(number), path)
