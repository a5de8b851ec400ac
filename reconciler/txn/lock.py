"""The ROOT lock (an flock on VAR/lock) and the test-only crash points of the apply protocol."""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import ApplyError, LockHeldError
from reconciler.support import fsio

LOCK = "lock"


def crashpoint(step: str) -> None:
    """Test-only: RECONCILER_TEST_CRASH_AT=STEP stops the process dead here (the crash sweep)."""
    if os.environ.get("RECONCILER_TEST_CRASH_AT") == step:
        os._exit(86)


class RootLock:
    """An exclusive flock on VAR/lock: one reconciler changes a ROOT at a time."""

    def __init__(self, var_dir: Path) -> None:
        self.path = var_dir / LOCK
        self._fd: int | None = None
        self._released_as = f"released {os.getpid()} {secrets.token_hex(8)} "
        self._releases = 0
        self.undisturbed = False
        """Set at each acquire: True when this lock's own last release is the last thing that
        happened to the lock file, so nobody (a `reconciler apply`, a process that crashed)
        held it in between. What this process knows of ROOT is then still all there is."""

    def acquire(self, timeout_s: float) -> None:
        fsio.ensure_private_dir(self.path.parent, configured=True)
        # Never through a link someone put there: the file is truncated and written.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise ApplyError(f"{self.path}: is a symbolic link: not followed; remove it") from exc
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise LockHeldError(
                        f"{self.path}: held by {who} for over {timeout_s:g} s; "
                        "another reconciler is changing this ROOT"
                    ) from None
                time.sleep(delay)  # polling a lock held by another process: no event to wait on
                delay = min(delay * 2, 0.2)
        self._fd = fd
        try:
            self.undisturbed = self._releases > 0 and os.pread(fd, _RECORD, 0) == self._marker()
        except OSError:
            self.undisturbed = False
        try:
            # Best effort: the PID only makes the waiter's message better. A full var_dir must
            # not leave us holding a lock nobody can release (a flock belongs to the open file).
            os.pwrite(fd, _record(f"{os.getpid()}\n"), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            self._releases += 1
            try:
                os.pwrite(self._fd, self._marker(), 0)
            except OSError:
                pass  # the next acquire then finds no marker and trusts nothing it knew
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def _marker(self) -> bytes:
        """What this lock's last release wrote into the lock file."""
        return _record(f"{self._released_as}{self._releases}")

    @contextmanager
    def held(self, timeout_s: float) -> Iterator[None]:
        self.acquire(timeout_s)
        try:
            yield
        finally:
            self.release()


_RECORD = 64
"""The lock file holds one record of this many bytes, overwritten in place: a file truncated and
written again makes ext4 flush it at its close (its `auto_da_alloc`), a wait in every pass."""


def _record(text: str) -> bytes:
    return text.encode().ljust(_RECORD)[:_RECORD]


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, _RECORD, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
