"""Directories opened once, without following a link below the directory they were opened from.

ROOT and var_dir are configured (and may be links: a volume, a bind mount); what lies inside them
is not: another program can put a link where `ROOT/data` or `VAR/txn` belongs. A `ConfinedDir`
holds its directory open (O_DIRECTORY), reached from its base one component at a time with
O_NOFOLLOW, and does everything by name relative to that descriptor (openat, renameat,
unlinkat): whatever links appear in the meantime, a write, rename, read or delete through it
stays in that directory. A component that is a link is refused, naming it (`LinkRefusedError`).

`RECONCILER_TEST_FAULT` (see `fsio`) injects errors here as on paths: the path it matches is the
directory's path joined with the name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Self

from reconciler.errors import ApplyError
from reconciler.support import fsio

__all__ = [
    "ConfinedDir",
    "ConfinedDirs",
    "LinkRefusedError",
    "fsync_dirs",
    "fsync_files",
    "remove_stale_temps",
    "syncers",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class LinkRefusedError(fsio.RefusedFileError):
    """A component of a confined path is a symbolic link (or not a directory): not followed."""


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError raised inside names `path` (a target), not the name it had relative to the
    directory's descriptor (a bare temp file's, say): errors name the real file concerned."""
    try:
        yield
    except OSError as exc:
        if not isinstance(exc, fsio.RefusedFileError):
            exc.filename, exc.filename2 = str(path), None
        raise


class ConfinedDir:
    """One directory, open; every operation by name inside it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, directory: Path, base: Path | None, *, create_mode: int | None = None) -> Self:
        """`directory`, reached from `base` (opened following links: it is configured) one
        component at a time without following any; `base` None: `directory` is configured
        itself. With `create_mode`, `directory` itself is created (that mode) when missing."""
        start = base if base is not None else directory
        fd = os.open(start, _DIR_FLAGS)
        current = Path(start)
        try:
            parts = directory.relative_to(start).parts if base is not None else ()
            for number, part in enumerate(parts, start=1):
                current = current / part
                parent, fd = fd, -1  # `_step` closes the parent, whatever happens
                fd = _step(parent, part, current, create_mode if number == len(parts) else None)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return cls(directory, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def readlink(self, name: str) -> str:
        with _naming(self.path / name):
            return os.readlink(name, dir_fd=self.fd)

    def read(self, name: str, limit: int) -> bytes | None:
        """A regular file's bytes (None when absent); RefusedFileError for a link, a special
        file or one over `limit` bytes (nothing read then)."""
        try:
            with _naming(self.path / name):
                fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise fsio.RefusedFileError(self.path / name, "is a symbolic link") from exc
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise fsio.RefusedFileError(self.path / name, "is not a regular file")
            if info.st_size > limit:
                raise fsio.RefusedFileError(self.path / name, f"{info.st_size} bytes: too large")
            with _naming(self.path / name):
                return fsio.read_up_to(fd, limit)
        finally:
            os.close(fd)

    def write_temp(self, name: str, data: bytes, mode: int, gid: int | None) -> str:
        """A new 0600 temporary file holding `data`, then given `mode` (not fsynced: see
        `fsync_files`); its name."""
        fsio.fault("write", str(self.path / name))
        tmp = f"{fsio.TMP_PREFIX}{name}.{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        with _naming(self.path / name):
            fd = os.open(tmp, flags, 0o600, dir_fd=self.fd)
        try:
            with _naming(self.path / name):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if gid is not None:
                    os.fchown(fd, -1, gid)
                os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            self.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def rename(self, tmp: str, name: str) -> None:
        fsio.fault("rename", str(self.path / name))
        with _naming(self.path / name):
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        """Remove `name` if it is there (a file or a link, never what a link points to)."""
        fsio.fault("unlink", str(self.path / name))
        try:
            with _naming(self.path / name):
                os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def replace(self, name: str, data: bytes, mode: int, gid: int | None) -> None:
        """Make `name` hold `data` with `mode`, atomically (fsynced before the rename)."""
        tmp = self.write_temp(name, data, mode, gid)
        try:
            fsync_files([(self, tmp)])
            self.rename(tmp, name)
        except BaseException:
            self.unlink(tmp)
            raise

    def symlink(self, target: str, name: str) -> None:
        """Make `name` a symbolic link to `target`, atomically (putting back one found there)."""
        tmp = f"{fsio.TMP_PREFIX}{name}.{secrets.token_hex(4)}"
        with _naming(self.path / name):
            os.symlink(target, tmp, dir_fd=self.fd)
        try:
            self.rename(tmp, name)
        except BaseException:
            self.unlink(tmp)
            raise

    def fsync(self) -> None:
        fsio.fault("fsync", str(self.path))
        os.fsync(self.fd)


class ConfinedDirs:
    """The directories one step of a pass works in, each opened once: those under one of
    `confined` (ROOT) without following a link below it, any other as configured."""

    def __init__(self, confined: Iterable[Path] = ()) -> None:
        self._confined = [Path(c) for c in confined]
        self._open: dict[Path, ConfinedDir] = {}

    def of(self, directory: Path, *, create_mode: int | None = None) -> ConfinedDir:
        found = self._open.get(directory)
        if found is None:
            base = next((c for c in self._confined if directory.is_relative_to(c)), None)
            found = self._open[directory] = ConfinedDir.open(
                directory, base, create_mode=create_mode
            )
        return found

    def opened(self) -> list[ConfinedDir]:
        return list(self._open.values())

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def __enter__(self) -> ConfinedDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_stale_temps(directories: Iterable[Path], confined: Iterable[Path]) -> list[Path]:
    """Remove the temporary files a crashed pass left in `directories` (those under one of
    `confined` reached without following a link); return what was removed."""
    removed = []
    with ConfinedDirs(confined) as dirs:
        for directory in directories:
            try:
                where = dirs.of(directory)
                names = [e.name for e in os.scandir(where.fd) if e.name.startswith(fsio.TMP_PREFIX)]
            except OSError:
                continue  # missing, or a link someone put there: nothing of ours to clean
            for name in names:
                info = where.lstat(name)
                if info is not None and (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                    where.unlink(name)
                    removed.append(directory / name)
    return removed


def fsync_files(files: Iterable[tuple[ConfinedDir, str]]) -> None:
    """Make the content of each (directory, name) durable, concurrently (`fsio.in_parallel`);
    ApplyError naming the first that failed."""
    fsio.in_parallel([(functools.partial(_fsync_at, d, name), d.path / name) for d, name in files])


def fsync_dirs(directories: Iterable[ConfinedDir]) -> None:
    """Make each directory's entries (renames, unlinks) durable, concurrently."""
    fsio.in_parallel([(d.fsync, d.path) for d in directories])


def syncers(
    *, files: Iterable[tuple[ConfinedDir, str]] = (), directories: Iterable[ConfinedDir] = ()
) -> list[fsio.Syncer]:
    """The same fsyncs as `fsync_files` and `fsync_dirs`, as jobs for another batch (a journal
    write's `also`): one round of waits for all of them. Each raises ApplyError naming its path."""
    jobs: list[tuple[Callable[[], object], Path]] = [
        (functools.partial(_fsync_at, d, name), d.path / name) for d, name in files
    ]
    jobs += [(d.fsync, d.path) for d in directories]
    return [functools.partial(_named, job, path) for job, path in jobs]


def _named(job: Callable[[], object], path: Path) -> None:
    try:
        job()
    except OSError as exc:
        raise ApplyError(fsio.describe(exc, path)) from exc


def _fsync_at(directory: ConfinedDir, name: str) -> None:
    fsio.fault("fsync", str(directory.path / name))
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=directory.fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _step(fd: int, part: str, path: Path, create_mode: int | None) -> int:
    """Open `part` inside the open directory `fd` without following it; `fd` is closed."""
    try:
        try:
            return os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            if create_mode is None:
                raise
            os.mkdir(part, create_mode, dir_fd=fd)
            created = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.fchmod(created, create_mode)  # whatever the umask
            return created
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                try:
                    what = "a symbolic link" if os.path.islink(path) else "not a directory"
                except OSError:
                    what = "not a directory"
                raise LinkRefusedError(path, f"is {what}: not followed") from exc
            raise
    finally:
        os.close(fd)
