"""Running a command bounded: its own session, its output kept, its whole tree killed on timeout.

What the hooks, the checks and the trust store's refresh command share:

* argv runs without a shell, in a new session (its own process group), with the reconciler's
  environment plus what the caller adds; stdin is /dev/null, or the bytes the caller gives, read
  from an unlinked temp file (a command that does not read them cannot block us);
* stdout and stderr go to one unlinked temp file; the last 4 KiB (UTF-8, at most 4096 bytes once
  encoded) are kept, through the output boundary (private key blocks and known secrets redacted,
  a credential also when it is not UTF-8, control characters and undecodable bytes escaped);
* on timeout every process of the group, and every descendant that left the group with
  setsid(), is killed with SIGKILL before the result is returned. A command that exits in time
  may leave background processes behind (a service it started); they are not touched.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from reconciler.core.secret import KEY_MARKER
from reconciler.support.redact import REDACTED, Clean, scrub_output

if TYPE_CHECKING:
    import psutil

__all__ = [
    "OUTPUT_TAIL_BYTES",
    "Completed",
    "is_dead",
    "output_tail",
    "run_bounded",
    "wait_exit",
]

OUTPUT_TAIL_BYTES = 4096
REDACTION_WINDOW_BYTES = 64 * 1024
"""Output read back to find key blocks around the cut: larger than any PEM private key."""
KILL_WAIT_S = 10.0
"""How long to wait for killed processes to be reaped before reporting them as survivors."""


@dataclass(frozen=True, slots=True)
class Completed:
    """How a bounded command ended."""

    exit_code: int | None
    """None when it timed out or could not start."""
    duration_ms: int
    output_tail: str
    error: str | None = None


def run_bounded(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout_s: float,
    stdin: bytes | None = None,
    started: Callable[[], object] | None = None,
) -> Completed:
    """Run argv in its own session, `stdin` on its standard input (default: none); on timeout
    kill its process group and its descendants. `started` is called once it runs (or could not
    start), before the wait: work that can go on while it runs."""
    began = time.monotonic()
    # Output goes to an unlinked temp file, not a pipe: a daemon the command leaves behind must
    # not keep us waiting for an end-of-file that never comes.
    with tempfile.TemporaryFile() as output, _input(stdin) as given:
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=given,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            if started is not None:
                started()
            reason = f"could not start {argv[0]}: {exc.strerror or exc}"
            return Completed(None, _ms(began), "", reason)
        failed: Exception | None = None
        if started is not None:
            try:
                started()
            except Exception as exc:  # raised once the command is waited for, never left running
                failed = exc
        error = None
        try:
            wait_exit(process, timeout_s)
        except subprocess.TimeoutExpired:
            survivors = _kill_tree(process)
            error = f"timed out after {timeout_s:g} s; its process group was killed"
            if survivors:
                error += f" (pids {', '.join(map(str, survivors))} did not die)"
        tail = output_tail(output)
    if failed is not None:
        raise failed
    return Completed(None if error else process.returncode, _ms(began), tail, error)


@contextlib.contextmanager
def _input(data: bytes | None) -> Iterator[IO[bytes] | int]:
    """What a command reads: /dev/null, or `data` in an unlinked temp file at its start."""
    if data is None:
        yield subprocess.DEVNULL
        return
    with tempfile.TemporaryFile() as given:
        given.write(data)
        given.seek(0)
        yield given


def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """`process.wait(timeout_s)` that notices the exit at once.

    Popen.wait with a timeout polls, sleeping between looks: a quick trust refresh held the pass
    (and the hooks after it) until the next look. A pidfd becomes readable when the process
    exits; waiting on it wakes with the exit. Where there is none (Linux before 5.3), Popen's.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return process.wait(timeout=timeout_s)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout_s
        while process.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(process.args, timeout_s)
            poller.poll(max(1, math.ceil(left * 1000)))
    finally:
        os.close(pidfd)
    return process.returncode


def output_tail(output: IO[bytes], limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The end of `output` as text of at most `limit` bytes in UTF-8, private keys cut out.

    Undecodable bytes are written ``\\xNN`` (the boundary's escaping), so the text is re-encoded
    and cut again at a character boundary: the audit log's limit holds for any output, binary
    included. Secrets are redacted in a wider window first, so a key that straddles the cut is
    recognised by its markers, and a credential by its bytes before they are decoded.
    """
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - REDACTION_WINDOW_BYTES))
    text = _redact(output.read()).encode("utf-8")
    if len(text) > limit:
        text = text[-limit:]
    # A cut may land inside a character: drop its continuation bytes (10xxxxxx).
    start = 0
    while start < len(text) and text[start] & 0xC0 == 0x80:
        start += 1
    # The end of a scrubbed text is scrubbed text: the audit record keeps it as it is.
    return Clean(text[start:].decode("utf-8"))


def _redact(data: bytes) -> str:
    """Output through the boundary (`scrub_output`: keys in any form, credentials, odd
    characters), and what its block pattern cannot see: a window that starts inside an END
    line's dashes."""
    text: str = scrub_output(data)
    while KEY_MARKER in text.upper():
        at = text.upper().index(KEY_MARKER)
        text = REDACTED + text[at + len(KEY_MARKER) :]
    return text


def _kill_tree(process: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL the hook's process group and every descendant; the pids that outlived the wait.

    Descendants are listed before the kill: once their parent dies they are re-parented and can
    no longer be found, and one that called setsid() is outside the group killpg reaches.
    """
    import psutil  # only a timed-out hook needs it: not in every daemon's memory

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()
    # Orphans are reaped by PID 1, which some containers never do: a zombie counts as dead.
    # Nothing signals the death of a process that is not our child, so this polls, bounded.
    deadline = time.monotonic() + KILL_WAIT_S
    alive = [p for p in descendants if not is_dead(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not is_dead(p)]
    return sorted(p.pid for p in alive)


def is_dead(process: psutil.Process) -> bool:
    """Gone, or a zombie waiting for a parent (or PID 1) to reap it: it runs no code any more."""
    import psutil

    try:
        # is_running() also says False when the pid was reused by another process.
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
