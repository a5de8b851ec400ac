"""A real nginx for tests: one console server on 127.0.0.1 that includes ROOT/nginx/ssl.conf.

Everything nginx writes (pid, logs, lock, temp dirs) lives under a prefix in tmp_path, so tests
run as root or not, in parallel with a system nginx, and leave nothing behind.

    nginx_path = require_nginx()                   # skip, or fail under RECONCILER_REQUIRE_NGINX=1
    server = NginxServer(tmp_path, root)
    assert server.test().returncode == 0           # nginx -t
    with server.start():                           # picks a free port; server.port
        ...                                        # change ROOT/nginx/ssl.conf or ROOT/data/*
        server.reload()                            # returns once new workers serve
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import psutil
import pytest

from tests.helpers.net import free_port

REQUIRE_ENV = "RECONCILER_REQUIRE_NGINX"
START_TIMEOUT_S = 15.0


class NginxError(RuntimeError):
    """The test nginx did not start, reload or stop; the message carries its error log."""


def find_nginx() -> str | None:
    """nginx on PATH, or Debian's /usr/sbin/nginx (not on a non-root user's PATH)."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").is_file():
        found = "/usr/sbin/nginx"
    return found


def require_nginx() -> str:
    """The nginx binary; skips the test when absent, or fails it when RECONCILER_REQUIRE_NGINX=1."""
    found = find_nginx()
    if found is None:
        reason = "nginx is not installed (not on PATH, no /usr/sbin/nginx)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 says the nginx tests must run")
        pytest.skip(f"{reason}; set {REQUIRE_ENV}=1 to make this a failure")
    return found


def nginx_t(conf: Path, *, binary: str | None = None) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on `conf`, with prefix and startup error log beside it (never /var/log)."""
    nginx = binary or require_nginx()
    prefix = conf.parent
    return subprocess.run(
        [nginx, "-t", "-p", f"{prefix}/", "-e", str(prefix / "nginx-t.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class NginxServer:
    """One nginx master (daemon off, our child) serving the console of `root` on 127.0.0.1.

    `listen_ssl=False` writes a plain `listen PORT;`, which is how the gateway's nginx is set up
    when ssl.conf says `ssl on;`; the default `listen PORT ssl;` works with or without it.
    """

    def __init__(
        self, tmp_path: Path, root: Path, *, listen_ssl: bool = True, binary: str | None = None
    ) -> None:
        self.root = root
        self.listen_ssl = listen_ssl
        self.binary = binary or require_nginx()
        self.prefix = tmp_path / "nginx"
        self.conf_path = self.prefix / "conf" / "nginx.conf"
        self.error_log = self.prefix / "logs" / "error.log"
        self.pid_path = self.prefix / "logs" / "nginx.pid"
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def ssl_conf(self) -> Path:
        return self.root / "nginx" / "ssl.conf"

    @property
    def address(self) -> tuple[str, int]:
        if self.port is None:
            raise NginxError("nginx was not started")
        return ("127.0.0.1", self.port)

    def config_text(self, port: int) -> str:
        p = self.prefix
        listen = f"127.0.0.1:{port}{' ssl' if self.listen_ssl else ''}"
        temp = "\n".join(
            f'    {name}_temp_path "{p}/temp/{name}";'
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""\
# nginx for reconciler tests; every path is under {p}
daemon off;
master_process on;
worker_processes 1;
pid "{self.pid_path}";
lock_file "{p}/logs/nginx.lock";
error_log "{self.error_log}" notice;

events {{
    worker_connections 64;
}}

http {{
    access_log off;
{temp}

    server {{
        listen {listen};
        server_name localhost;
        include "{self.ssl_conf}";

        location / {{
            default_type text/plain;
            return 200 "reconciler test console\\n";
        }}
    }}
}}
"""

    def write_config(self, port: int | None = None) -> Path:
        """Write nginx.conf for `port` (the started port, else a placeholder: -t binds nothing)."""
        for sub in ("conf", "logs", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text(port or self.port or 8443))
        return self.conf_path

    def test(self) -> subprocess.CompletedProcess[str]:
        """`nginx -t` on this server's configuration as it is on disk now."""
        self.write_config()
        return nginx_t(self.conf_path, binary=self.binary)

    @property
    def check_argv(self) -> list[str]:
        """argv of `nginx -t` for this server, for a hook's `check`."""
        return [self.binary, "-t", "-q", "-p", f"{self.prefix}/", "-c", str(self.conf_path)]

    @property
    def reload_argv(self) -> list[str]:
        """argv of `nginx -s reload` for this server (signals the master from the pid file)."""
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf_path), "-s", "reload"]

    def start(self, port: int | None = None, timeout: float = START_TIMEOUT_S) -> NginxServer:
        """Start nginx and return once it accepts TCP connections on `port` (default: free)."""
        if self._proc is not None:
            raise NginxError("nginx is already running")
        self.port = port or free_port()
        self.write_config()
        stderr = (self.prefix / "logs" / "stderr.log").open("ab")
        with stderr:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    f"{self.prefix}/",
                    "-e",
                    str(self.error_log),
                    "-c",
                    str(self.conf_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._accepts():
            # Waiting on the process both paces the loop and notices an early exit.
            code = _exit_code(self._proc, within=0.05)
            if code is not None:
                self._proc = None
                raise NginxError(f"nginx exited with {code} at start{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise NginxError(f"nginx did not listen within {timeout} s{self._log_tail()}")
        return self

    def workers(self) -> set[int]:
        """pids of the master's current worker processes."""
        if self._proc is None:
            return set()
        try:
            return {child.pid for child in psutil.Process(self._proc.pid).children()}
        except psutil.NoSuchProcess:
            return set()

    def reload(self, timeout: float = START_TIMEOUT_S) -> None:
        """SIGHUP the master; return once only new workers run. NginxError if nginx refused.

        A refused configuration leaves the old workers serving and logs [emerg]; that is
        reported at once rather than at the deadline.
        """
        if self._proc is None:
            raise NginxError("nginx is not running")
        self.write_config()
        old = self.workers()
        offset = self.error_log.stat().st_size if self.error_log.exists() else 0
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            current = self.workers()
            if current and not current & old:
                return
            emerg = self._log_since(offset)
            if "[emerg]" in emerg:
                raise NginxError(f"nginx refused the reload:\n{emerg.strip()}")
            if time.monotonic() > deadline:
                raise NginxError(f"nginx did not reload within {timeout} s{self._log_tail()}")
            code = _exit_code(self._proc, within=0.05)
            if code is not None:
                self._proc = None
                raise NginxError(f"nginx exited with {code} during reload{self._log_tail()}")

    def stop(self, timeout: float = START_TIMEOUT_S) -> None:
        """Fast shutdown (SIGTERM); SIGKILL master and workers if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            workers = psutil.Process(proc.pid).children()
        except psutil.NoSuchProcess:
            workers = []
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()

    def __enter__(self) -> NginxServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=1):
                return True
        except OSError:
            return False

    def _log_since(self, offset: int) -> str:
        try:
            with self.error_log.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self) -> str:
        text = self._log_since(0)
        stderr = self.prefix / "logs" / "stderr.log"
        if stderr.exists():
            text += stderr.read_text(errors="replace")
        return f"; nginx said:\n{text[-2000:].strip()}" if text.strip() else ""


def _exit_code(proc: subprocess.Popen[bytes], *, within: float) -> int | None:
    """The exit code if `proc` ends within `within` seconds, else None."""
    try:
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        return None
