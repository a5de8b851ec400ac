"""The shipped example hooks run as a [[hooks]] entry runs them, and the processes they act on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from reconciler.support.devpki import Issued
from tests.helpers import REPO
from tests.helpers.state import Pki
from tests.helpers.waiting import wait_for

HOOKS = REPO / "hooks"

# A tiny TCP service: listens, answers a banner, exits on SIGTERM, survives SIGHUP (a reload).
SERVER = """\
import signal, socket, sys
signal.signal(signal.SIGHUP, lambda *_: None)
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
while True:
    conn, _ = sock.accept()
    conn.sendall(b"220 demo\\r\\n")
    conn.close()
"""

# The supervisor the hook relies on: starts the service again whenever it exits.
SUPERVISOR = """\
import subprocess, sys
while True:
    subprocess.run(sys.argv[1:], check=False)
"""


def run_hook(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """An example hook as a [[hooks]] entry runs it: [python, script, args...], no shell."""
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def listener_on(port: int, name: str) -> psutil.Process | None:
    """The process running the script `name` listening on `port`, if any."""
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            cmdline = process.cmdline()
            if len(cmdline) > 1 and Path(cmdline[1]).name == name:
                for conn in process.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                        return process
    return None


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill `proc` and every process under it. A process that leads its own group (started with
    `start_new_session`, like a supervisor) is killed with its whole group at once: killed one by
    one, a supervisor could start another child between its child's death and its own."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    proc.kill()
    proc.wait()


def write_identity(root: Path, leaf: Issued, pki: Pki) -> None:
    (root / "data" / "cert.pem").write_bytes(pki.chain(leaf))
    key = root / "data" / "key.pem"
    key.touch(mode=0o600)
    key.write_bytes(leaf.key_pem)


DECOY_PROGRAMS = (["cat"], ["sort"], ["wc", "-l"])
"""Programs that take a file as their first argument and block reading a FIFO: an operator's
`cat /etc/default/NAME`, a pager, an editor. None of them is the service NAME."""


@contextlib.contextmanager
def decoys(directory: Path, name: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes that name `name` only as the file they read (a FIFO nobody writes: they block),
    killed on the way out."""
    fifo = directory / name
    os.mkfifo(fifo)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for program in DECOY_PROGRAMS:
            argv = [*program[:1], str(fifo), *program[1:]]
            started.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
        wait_for(
            lambda: all(psutil.Process(d.pid).cmdline()[1:2] == [str(fifo)] for d in started),
            "the decoys to run",
        )
        yield started
    finally:
        for decoy in started:
            kill_tree(decoy)


def assert_untouched(started: list[subprocess.Popen[bytes]]) -> None:
    assert [d.poll() for d in started] == [None] * len(started), "a decoy was signalled"


def run_hook_bounded(*argv: str, memory_mb: int = 1024) -> subprocess.CompletedProcess[str]:
    """`run_hook`, its address space limited: a hook that reads without bound fails fast with a
    MemoryError instead of taking the machine's memory."""
    return subprocess.run(
        ["prlimit", f"--as={memory_mb << 20}", "--", sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def bad_pid_files(tmp_path: Path) -> list[tuple[Path, str]]:
    """Pid files a hook must refuse without reading them, and words of the reason it gives."""
    fifo = tmp_path / "fifo.pid"
    os.mkfifo(fifo)
    sparse = tmp_path / "sparse.pid"
    with sparse.open("wb") as handle:
        handle.truncate(8 << 30)
    real = tmp_path / "real.pid"
    real.write_text(f"{os.getpid()}\n")
    link = tmp_path / "link.pid"
    link.symlink_to(real)
    return [
        (Path("/dev/zero"), "not a regular file"),
        (fifo, "not a regular file (it is a FIFO)"),
        (sparse, "over the limit"),
        (link, "symbolic link"),
    ]
