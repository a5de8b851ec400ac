"""A Debian 12 booted with systemd under systemd-nspawn: cached root, boot, exec, teardown.

The root file system is built once by mmdebstrap and kept as a tar outside the clone
($RECONCILER_CI_CACHE, default /var/cache/reconciler-ci), named by a digest of the build command
so a changed package list builds a new one (older tars of the recipe are removed). Each run
unpacks it into a fresh directory, boots it with the repository bound read-only at /src, and
always powers it off and deletes it at the end.

The machine holds what a mail gateway host runs, as Debian installs it: nginx (its default site
on port 80), Postfix, certbot. By default the container shares the host's network (servers on
either side meet on 127.0.0.1); `private_network=True` gives it a loopback of its own, where
its nginx and Postfix listen on 80, 443 and 25 as on a real host, and clients run inside.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.waiting import wait_for

SUITE = "bookworm"
PACKAGES = (
    "systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,openssl,nginx,postfix,certbot"
)
MMDEBSTRAP = (
    "mmdebstrap", "--variant=apt", f"--include={PACKAGES}",
    # Postfix asks how mail is delivered; "Internet Site" is the gateway's answer.
    "--essential-hook=echo postfix postfix/main_mailer_type select Internet Site"
    " | chroot \"$1\" debconf-set-selections",
    "--essential-hook=echo postfix postfix/mailname string gateway.test"
    " | chroot \"$1\" debconf-set-selections",
    # Smaller to unpack at every run: no manuals, translations or documentation but copyrights.
    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    # Said, not guessed from the output's name (which ends in .partial while it is written).
    "--format=tar",
    SUITE,
)  # fmt: skip
CACHE = Path(os.environ.get("RECONCILER_CI_CACHE", "/var/cache/reconciler-ci"))
STALE_S = 7 * 86400
# What systemd-nspawn exits with when the container's init asks for a reboot.
REBOOT_STATUS = 133
# A clean environment for commands inside: nothing of the host's (pip settings, say) leaks in.
INSIDE_ENV = ("env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def rootfs_tar() -> Path:
    """The cached root file system tar; built (about a minute) when missing."""
    key = hashlib.sha256("\0".join(MMDEBSTRAP).encode()).hexdigest()[:12]
    tar = CACHE / f"host-{SUITE}-{key}.tar"
    if tar.is_file():
        os.utime(tar)  # its mtime says when it was last used
        return tar
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is not installed (apt-get install mmdebstrap systemd-container)")
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob(f"host-{SUITE}-*.tar"):
        # Another recipe's root, unused for a week (a checkout of another branch may still use
        # a recent one).
        if time.time() - stale.stat().st_mtime > STALE_S:
            stale.unlink(missing_ok=True)
    partial = tar.with_name(f"{tar.name}.{os.getpid()}.partial")
    try:
        subprocess.run([*MMDEBSTRAP, str(partial)], check=True, stdin=subprocess.DEVNULL)
        partial.replace(tar)
    finally:
        partial.unlink(missing_ok=True)
    return tar


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Machine:
    """A booted container: run commands in it, read and write its files from the host."""

    def __init__(self, root: Path, nspawn_argv: list[str], console: Path) -> None:
        self.root = root
        self.console = console
        self.init_pid = 0
        self._argv = nspawn_argv
        self.nspawn = self._launch()

    def _launch(self) -> subprocess.Popen[bytes]:
        with self.console.open("ab") as log:
            return subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def reboot(self) -> None:
        """`systemctl reboot` inside, as an operator would; nspawn, which runs no supervisor
        here, exits when the container asks for a reboot (status 133) and is started again on
        the same root file system. Returns once the machine has booted again."""
        self.run("systemctl", "reboot", check=False)
        try:
            status = self.nspawn.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the machine did not shut down for the reboot\n{self.console_tail()}")
        if status != REBOOT_STATUS:
            pytest.fail(f"systemd-nspawn exited {status}, not {REBOOT_STATUS} (a reboot)")
        self.init_pid = 0
        self.nspawn = self._launch()
        self.wait_booted()

    def path(self, inside: str) -> Path:
        """The host path of a file inside the container (same file, same inode)."""
        return self.root / inside.lstrip("/")

    def run(
        self, *argv: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside (all of the container's namespaces, a clean environment)."""
        command = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "-C"]
        result = subprocess.run(
            [*command, *INSIDE_ENV, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"inside the machine, {' '.join(argv)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def sh(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show` properties of a unit."""
        out = self.run("systemctl", "show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def console_tail(self) -> str:
        try:
            return self.console.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _find_init(self) -> int:
        children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return 0
        for pid in pids:
            # nspawn's first child is a helper that execs nothing; the container's init is the
            # process that became systemd.
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return 0

    def wait_booted(self) -> None:
        def init() -> int:
            if self.nspawn.poll() is not None:
                pytest.fail(
                    f"systemd-nspawn exited {self.nspawn.returncode}\n{self.console_tail()}"
                )
            return self._find_init()

        self.init_pid = wait_for(init, "the container's init", timeout=60)

        # Until systemd listens on its bus, systemctl fails at once instead of waiting.
        def booted() -> str | None:
            result = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=240)
            state = result.stdout.strip()
            if state in ("maintenance", "stopping"):
                pytest.fail(f"the machine did not boot: {state}\n{self.console_tail()}")
            return state if state in ("running", "degraded") else None

        wait_for(booted, "the machine to boot", timeout=240, detail=self.console_tail)

    def power_off(self) -> None:
        """SIGTERM makes nspawn shut the container down; SIGKILL its group if that hangs."""
        if self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=30)


@contextlib.contextmanager
def booted(
    workdir: Path,
    repo: Path,
    prepare: Callable[[Path], None] | None = None,
    *,
    private_network: bool = False,
) -> Iterator[Machine]:
    """Unpack the cached root file system under `workdir`, let `prepare(root)` adjust it, boot
    it with `repo` bound read-only at /src; powered off and deleted on the way out, always.
    `private_network`: a network namespace of its own, with only a loopback interface."""
    tar = rootfs_tar()
    root = workdir / "rootfs"
    root.mkdir()
    machine: Machine | None = None
    try:
        subprocess.run(
            ["tar", "--numeric-owner", "-xpf", str(tar), "-C", str(root)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        if prepare is not None:
            prepare(root)
        argv = [
            "systemd-nspawn", "-q", "--register=no", "--keep-unit",
            "-D", str(root), f"--bind-ro={repo}:/src", "--boot",
        ]  # fmt: skip
        if private_network:
            argv.insert(-1, "--private-network")
        machine = Machine(root, argv, workdir / "console.log")
        machine.wait_booted()
        yield machine
    finally:
        if machine is not None:
            machine.power_off()
        shutil.rmtree(root, ignore_errors=True)
