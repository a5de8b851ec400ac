"""Durable file primitives for the apply step: temp file, fsync, rename, directory fsync.

Every new file is created 0600 (O_EXCL, so never world-readable, even for a moment), written,
given its final mode and group, fsynced, then renamed over the target. Temporary files carry
TMP_PREFIX so a crashed pass's leftovers can be found and removed at the next start.

For tests only, RECONCILER_TEST_FAULT=OP:SUBSTRING:ERRNO makes the OP ("write", "rename",
"unlink", "fsync", "mkdir") on any path containing SUBSTRING fail with that errno.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

from reconciler.errors import ApplyError, ReconcilerError

TMP_PREFIX = ".reconciler-tmp-"

T = TypeVar("T")

RACY_NS = 2_000_000_000
"""A file whose status changed less than this before it was read is never cached: the kernel
stamps changes with a coarse clock (a tick of up to 10 ms), so a second write within the same
tick would leave size, mtime and ctime all unchanged (git calls this "racily clean")."""


def fault(op: str, path: str) -> None:
    """Raise the error RECONCILER_TEST_FAULT asks for at `op` on `path` (tests only)."""
    spec = os.environ.get("RECONCILER_TEST_FAULT")
    if not spec:
        return
    for item in spec.split(","):
        want_op, _, rest = item.partition(":")
        substring, _, code = rest.rpartition(":")
        if want_op == op and substring in path:
            number = getattr(errno, code, errno.EIO)
            raise OSError(number, os.strerror(number), path)


def describe(exc: OSError, path: Path | str) -> str:
    """An operator's sentence for an I/O error: the path and what went wrong."""
    names = {
        errno.ENOSPC: "no space left on the device",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "the file system is read-only",
        errno.EIO: "input/output error",
        errno.EDQUOT: "disk quota exceeded",
    }
    reason = names.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return f"{path}: {reason}"


def ensure_private_dir(directory: Path, *, configured: bool = False) -> None:
    """Create `directory` (and parents) 0700, and tighten it if it exists more open; ApplyError
    naming it when that fails (a file where the var dir belongs, say). A link there is refused
    unless the directory is `configured` (var_dir itself may be a link; what is inside it is
    the reconciler's own, and another program's link there is never followed)."""
    try:
        fault("mkdir", str(directory))
        if not configured and os.path.islink(directory):
            raise ApplyError(f"{directory}: is a symbolic link: not followed; remove it")
        if os.path.lexists(directory) and not directory.is_dir():
            raise ApplyError(f"{directory}: is not a directory (setting `var_dir`?)")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o077:
            directory.chmod(0o700)
    except OSError as exc:
        raise ApplyError(f"cannot create {describe(exc, directory)}") from exc


def write_temp(
    directory: Path, name: str, data: bytes, mode: int, gid: int | None, *, sync: bool = True
) -> Path:
    """Write `data` to a new 0600 temporary file in `directory`, then give it `mode`; fsynced
    unless `sync` is False (the caller then syncs many at once with `sync_all`)."""
    tmp = directory / f"{TMP_PREFIX}{name}.{secrets.token_hex(4)}"
    fault("write", str(directory / name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def write_new(path: Path, data: bytes) -> None:
    """Create `path` (0600, it must not exist) holding `data`, not fsynced.

    For staging in a private directory nothing else reads until the journal names it: no temp
    file and rename needed (they double the directory work, which dominates a large pass);
    durability comes from the journal's fsync batch.
    """
    fault("write", str(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)


def replace_file(
    path: Path, data: bytes, mode: int, gid: int | None = None, *, sync_dir: bool = True
) -> None:
    """Atomically make `path` hold `data` with `mode`; raise ApplyError naming the path."""
    tmp: Path | None = None
    try:
        tmp = write_temp(path.parent, path.name, data, mode, gid)
        fault("rename", str(path))
        os.rename(tmp, path)
        tmp = None
        if sync_dir:
            fsync_dir(path.parent)
    except OSError as exc:
        raise ApplyError(describe(exc, path)) from exc
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)


def remove_file(path: Path, *, sync_dir: bool = True) -> None:
    """Remove `path` if it exists; raise ApplyError naming the path."""
    try:
        fault("unlink", str(path))
        path.unlink(missing_ok=True)
        if sync_dir:
            fsync_dir(path.parent)
    except OSError as exc:
        raise ApplyError(describe(exc, path)) from exc


def fsync_dir(path: Path | str) -> None:
    """fsync a directory, making its entries (renames, unlinks) durable: the one fsync helper.

    A file's content is made durable by the same call (`sync_all` uses it). Links are
    followed: ROOT/data may be one, and fsync through it is harmless.
    """
    fault("fsync", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_POOL: ThreadPoolExecutor | None = None

Syncer = Callable[[], None]
"""Makes something durable that is not a path to fsync (an open log's records, say); raises
OSError or a ReconcilerError when it cannot."""


def _in_parallel(paths: Sequence[Path], also: Sequence[Syncer] = ()) -> None:
    """fsync every path (file or directory), and run every `also`, concurrently: the disk sees one
    batch, not a queue of waits (a pass's fsyncs were most of the swap-to-hook latency)."""
    jobs: list[tuple[Syncer, Path | None]] = [(partial(fsync_dir, path), path) for path in paths]
    in_parallel([*jobs, *((job, None) for job in also)])


def in_parallel(jobs: Sequence[tuple[Callable[[], object], Path | str | None]]) -> None:
    """Run each job (an fsync, say) concurrently, then raise the first failure: an OSError as an
    ApplyError naming the job's path (its second item), a ReconcilerError as itself."""
    global _POOL  # noqa: PLW0603 - one lazily started pool per process, idle threads cost nothing
    if len(jobs) <= 1:
        for job, path in jobs:
            try:
                job()
            except OSError as exc:
                raise ApplyError(describe(exc, path or exc.filename or "?")) from exc
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")
    futures = [(_POOL.submit(job), path) for job, path in jobs]
    failure: ReconcilerError | None = None
    for future, path in futures:
        try:
            future.result()
        except OSError as exc:
            failure = failure or ApplyError(describe(exc, path or exc.filename or "?"))
        except ReconcilerError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def sync_all(paths: Iterable[Path], *, also: Sequence[Syncer] = ()) -> None:
    """fsync files and directories alike, and run `also`, concurrently (one round of waits)."""
    _in_parallel(sorted(set(paths)), also)


def sync_dirs(directories: Iterable[Path]) -> None:
    """Make every directory's entries (renames, unlinks) durable (concurrently)."""
    _in_parallel(sorted(set(directories)))


def replace_link(path: Path, target: str) -> None:
    """Atomically make `path` a symbolic link to `target`; ApplyError naming `path`."""
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}"
    try:
        os.symlink(target, tmp)
        rename_into(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise ApplyError(describe(exc, path)) from exc
    except ApplyError:
        _unlink_quietly(tmp)
        raise


def rename_into(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file over `path`; ApplyError naming `path`."""
    try:
        fault("rename", str(path))
        os.rename(tmp, path)
    except OSError as exc:
        raise ApplyError(describe(exc, path)) from exc


TARGET_LIMIT = 1 << 30


def read_bytes(path: Path) -> bytes | None:
    """A regular file's content; None when absent (a link or special file counts as absent, and
    is never opened for reading beyond its fstat: a FIFO never blocks)."""
    try:
        return read_safe(path, TARGET_LIMIT)
    except RefusedFileError:
        return None


class RefusedFileError(OSError):
    """A file others control that is not read: a link, not a regular file, or too large."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(errno.EINVAL, reason, str(path))
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def read_safe(path: Path | str, limit: int, *, follow: bool = False) -> bytes | None:
    """The one reader for files others control (git metadata, var files, targets, STATE).

    None when the file is absent. RefusedFileError when it is a link (unless `follow`), not a
    regular file (opened non-blocking, so a FIFO never hangs the reader; checked with fstat, so a
    device is never read), or over `limit` bytes; other OSErrors as they come.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RefusedFileError(path, "is a symbolic link: not followed") from exc
        if exc.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):  # a socket, a device
            try:
                kind = kind_of(os.stat(path).st_mode)
            except OSError:
                kind = "not a plain file"
            raise RefusedFileError(path, f"is not a regular file (it is {kind})") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFileError(path, f"is not a regular file (it is {kind_of(info.st_mode)})")
        if info.st_size > limit:
            raise RefusedFileError(path, f"{info.st_size} bytes: over the limit of {limit}")
        data = read_up_to(fd, limit)
        if len(data) > limit:
            raise RefusedFileError(path, f"grew over the limit of {limit} bytes while read")
        return data
    finally:
        os.close(fd)


def read_up_to(fd: int, limit: int, start: bytes = b"") -> bytes:
    """`start` and the rest of an open file, up to one byte over `limit` (which says "too big")."""
    chunks, total = [start], len(start)
    while total <= limit:
        chunk = os.read(fd, min(limit + 1 - total, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def kind_of(mode: int) -> str:
    """What a file of this mode is, in words ("a FIFO", "a directory", ...)."""
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


StatKey = bytes
_STAT_KEY = struct.Struct("=QQqqq")


def stat_key(info: os.stat_result) -> StatKey:
    """What changes whenever a file's content does (device, inode, size, mtime, ctime), packed:
    caches hold one for each of thousands of files (a tuple of five ints is three times the
    size)."""
    return _STAT_KEY.pack(
        info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns
    )


class StatCache(Generic[T]):
    """path -> a value computed from the file's content, trusted while the file's stat key holds.

    For a long-running daemon: its passes re-read thousands of target and trust-store files that
    nobody changed. Values are kept only for files that had been unchanged for RACY_NS when read,
    so a later change always shows in the stat key.
    """

    def __init__(self, limit: int = 65536) -> None:
        self._entries: dict[str, tuple[StatKey, T]] = {}
        self._limit = limit

    def get(self, path: str, info: os.stat_result) -> T | None:
        """The value stored for `path` if its stat key is still `info`'s, else None."""
        found = self._entries.get(path)
        if found is None or found[0] != stat_key(info):
            return None
        return found[1]

    def put(self, path: str, info: os.stat_result, value: T, read_at_ns: int) -> None:
        """Remember `value`, read from `path` at `read_at_ns` (time.time_ns() before the read)
        while its status was `info`; ignored when the file had changed too recently."""
        if read_at_ns - info.st_ctime_ns < RACY_NS:
            self._entries.pop(path, None)
            return
        if len(self._entries) >= self._limit:
            self._entries.clear()  # bounded: a pathological ROOT must not grow a daemon forever
        self._entries[path] = (stat_key(info), value)


def now_ns() -> int:
    """The wall clock in ns: the clock file timestamps are taken from."""
    return time.time_ns()
