"""The shipped example hooks run as a [[hooks]] entry runs them, and the processes they act on."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import psutil

from reconciler.support.devpki import Issued
from tests.helpers import REPO
from tests.helpers.state import Pki

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
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    proc.kill()
    proc.wait()


def write_identity(root: Path, leaf: Issued, pki: Pki) -> None:
    (root / "data" / "cert.pem").write_bytes(pki.chain(leaf))
    key = root / "data" / "key.pem"
    key.touch(mode=0o600)
    key.write_bytes(leaf.key_pem)
