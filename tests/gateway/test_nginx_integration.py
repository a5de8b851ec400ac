"""Passes against a real nginx: reload hooks, `nginx -t` checks, verification and rollback.

The console nginx is set up the way the gateway's is: `listen PORT;` (no `ssl`) and an include of
ROOT/nginx/ssl.conf through a glob, so that the file's absence is valid configuration (HTTPS off)
and its presence, with `ssl on;`, turns HTTPS on. Hooks reload it with hooks/nginx-reload.
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.nginx import NginxServer, require_nginx
from tests.helpers.passes import HookRunLog, audit, revision_of
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki
from tests.helpers.tls import leaf_fingerprint, pem_fingerprint

pytestmark = pytest.mark.nginx

NGINX_RELOAD = REPO / "hooks" / "nginx-reload"


class ConsoleNginx(NginxServer):
    """The gateway's console server: plain listen, optional ssl.conf, operator's own directives."""

    def __init__(self, tmp_path: Path, root: Path, server_extra: str = "") -> None:
        super().__init__(tmp_path, root, listen_ssl=False)
        self.server_extra = server_extra

    def config_text(self, port: int) -> str:
        text = super().config_text(port)
        include = f'include "{self.ssl_conf}";'
        assert include in text
        # A glob that matches nothing is not an error for nginx: HTTPS off is a valid config.
        optional = f'include "{self.ssl_conf.parent}/ssl.con[f]";'
        return text.replace(include, f"{optional}\n        {self.server_extra}")

    def reload_hook(self, *, check: bool = True, timeout_s: float = 30) -> str:
        """[[hooks]] that checks with `nginx -t` and reloads, both through hooks/nginx-reload."""
        run = [sys.executable, str(NGINX_RELOAD), "--pid-file", str(self.pid_path)]
        nginx_t = [
            sys.executable, str(NGINX_RELOAD), "--check", "--nginx", self.binary, "--",
            "-q", "-p", f"{self.prefix}/", "-c", str(self.conf_path),
        ]  # fmt: skip
        text = (
            '[[hooks]]\nname = "reload-console"\non = ["identity", "console"]\n'
            f"run = {toml_list(run)}\ntimeout_s = {timeout_s}\n"
        )
        if check:
            text += f"check = {toml_list(nginx_t)}\n"
        return text


def toml_list(argv: list[str]) -> str:
    return "[" + ", ".join(f'"{arg}"' for arg in argv) + "]"


def plain_http_get(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


def speaks_tls(address: tuple[str, int]) -> bool:
    try:
        leaf_fingerprint(address)
    except ssl.SSLError:
        return False
    return True


def events(box: Sandbox, revision: str) -> list[str]:
    return [str(r["event"]) for r in audit(box) if r["revision"] == revision]


def hook_steps(box: Sandbox, revision: str) -> list[tuple[object, ...]]:
    return [
        (r["hook"], r["step"], r["phase"], r["exit_code"])
        for r in audit(box)
        if r["event"] == "hook.ran" and r["revision"] == revision
    ]


def console_for(sandbox: Sandbox, tmp_path: Path, server_extra: str = "") -> ConsoleNginx:
    require_nginx()
    server = ConsoleNginx(tmp_path, sandbox.root, server_extra)
    server.start()
    # The gateway's form: ssl.conf says `ssl on;` (nginx 1.22 accepts it, with a warning).
    sandbox.env["RECONCILER_NGINX_SSL_ON"] = "true"
    sandbox.extra = f'[verify]\nconsole = "127.0.0.1:{server.port}"\ntimeout_s = 10\n'
    return server


@pytest.fixture
def console(sandbox: Sandbox, tmp_path: Path) -> Iterator[ConsoleNginx]:
    with console_for(sandbox, tmp_path) as server:
        sandbox.hooks = server.reload_hook()
        yield server


def test_identity_change_is_served_after_the_pass(
    sandbox: Sandbox, console: ConsoleNginx, pki: Pki
) -> None:
    assert not speaks_tls(console.address)  # no ssl.conf yet: plain HTTP
    first = sandbox.run("apply")
    assert first.returncode == 0, first.stderr
    assert b"ssl on;" in (sandbox.root / "nginx" / "ssl.conf").read_bytes()
    assert leaf_fingerprint(console.address) == pem_fingerprint(pki.leaf.cert_pem)

    sandbox.state.identity(pki, pki.leaf2)
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    assert leaf_fingerprint(console.address) == pem_fingerprint(pki.leaf2.cert_pem)
    revision = revision_of(sandbox)
    assert hook_steps(sandbox, revision) == [
        ("reload-console", "check", "apply", 0),
        ("reload-console", "run", "apply", 0),
    ]
    assert events(sandbox, revision)[-1] == "pass.succeeded"


def test_hook_that_does_not_reload_fails_verification_and_old_files_come_back(
    sandbox: Sandbox, console: ConsoleNginx, pki: Pki
) -> None:
    assert sandbox.run("apply").returncode == 0
    before = sandbox.targets()
    sandbox.hooks = '[[hooks]]\nname = "forgetful"\non = ["identity"]\nrun = ["true"]\n'
    sandbox.extra = f'[verify]\nconsole = "127.0.0.1:{console.port}"\ntimeout_s = 1.5\n'
    sandbox.state.identity(pki, pki.leaf2)
    revision = revision_of(sandbox)

    result = sandbox.run("apply")

    assert result.returncode == 1
    assert f"verification failed: console 127.0.0.1:{console.port}: presents" in result.stderr
    assert "previous state is back" in result.stderr
    assert sandbox.targets() == before
    assert events(sandbox, revision)[-2:] == ["rollback.completed", "pass.failed"]
    assert hook_steps(sandbox, revision) == [
        ("forgetful", "run", "apply", 0),
        ("forgetful", "run", "rollback", 0),
    ]
    assert leaf_fingerprint(console.address) == pem_fingerprint(pki.leaf.cert_pem)


def test_failing_nginx_check_prevents_the_reload_and_rolls_back(
    sandbox: Sandbox, tmp_path: Path, pki: Pki
) -> None:
    """The operator's server block pins ssl_session_timeout; the rendered ssl.conf sets it too,
    so turning HTTPS on gives a configuration `nginx -t` rejects ("directive is duplicate")."""
    gateway = (sandbox.state.path / "gateway.toml").read_text()
    sandbox.state.write("gateway.toml", gateway.replace("https = true", "https = false"))
    with console_for(sandbox, tmp_path, server_extra="ssl_session_timeout 5m;") as console:
        sandbox.hooks = console.reload_hook()
        first = sandbox.run("apply")
        assert first.returncode == 0, first.stderr
        assert not (sandbox.root / "nginx" / "ssl.conf").exists()
        before = sandbox.targets()
        workers = console.workers()

        sandbox.state.write("gateway.toml", gateway)  # https = true
        revision = revision_of(sandbox)
        result = sandbox.run("apply")

        assert result.returncode == 1
        assert "hook 'reload-console' (check) exited 1" in result.stderr
        assert "its run step was not started" in result.stderr
        assert sandbox.targets() == before
        # In the apply phase only the check ran; the rollback (ssl.conf gone again) checked
        # and reloaded the old configuration.
        assert hook_steps(sandbox, revision) == [
            ("reload-console", "check", "apply", 1),
            ("reload-console", "check", "rollback", 0),
            ("reload-console", "run", "rollback", 0),
        ]
        check = next(r for r in audit(sandbox) if r["event"] == "hook.ran" and r["exit_code"] == 1)
        assert '"ssl_session_timeout" directive is duplicate' in str(check["output_tail"])
        assert events(sandbox, revision)[-2:] == ["rollback.completed", "pass.failed"]
        assert console.workers() != workers  # the rollback's reload
        assert b"reconciler test console" in plain_http_get(console.address)


def test_turning_https_off_removes_ssl_conf_and_nginx_serves_plain_http(
    sandbox: Sandbox, console: ConsoleNginx, pki: Pki
) -> None:
    assert sandbox.run("apply").returncode == 0
    assert speaks_tls(console.address)
    gateway = (sandbox.state.path / "gateway.toml").read_text()
    sandbox.state.write("gateway.toml", gateway.replace("https = true", "https = false"))

    result = sandbox.run("apply")

    assert result.returncode == 0, result.stderr
    assert not (sandbox.root / "nginx" / "ssl.conf").exists()
    answer = plain_http_get(console.address)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"reconciler test console" in answer
    assert not speaks_tls(console.address)


def test_hooks_run_once_for_their_kinds_with_the_documented_environment(
    sandbox: Sandbox, console: ConsoleNginx, pki: Pki
) -> None:
    rec = HookRunLog(sandbox)
    sandbox.hooks = (
        rec.hook("announce", ["identity", "console"])
        + console.reload_hook()
        + rec.hook("profiles", ["profiles"])
    )
    assert sandbox.run("apply").returncode == 0
    rec.clear()

    sandbox.state.identity(pki, pki.leaf2)
    assert sandbox.run("apply").returncode == 0
    revision = revision_of(sandbox)
    assert rec.runs() == [["announce", "apply", "identity", revision, str(sandbox.root)]]
    assert [step[:2] for step in hook_steps(sandbox, revision)] == [
        ("announce", "run"),
        ("reload-console", "check"),
        ("reload-console", "run"),
    ]
    assert leaf_fingerprint(console.address) == pem_fingerprint(pki.leaf2.cert_pem)

    # An unrelated commit: a comment and a README. No hook, no reload.
    rec.clear()
    workers = console.workers()
    sandbox.state.write("gateway.toml", (sandbox.state.path / "gateway.toml").read_text() + "#\n")
    sandbox.state.write("README.md", "the gateway's desired state\n")
    unrelated = revision_of(sandbox)
    assert unrelated != revision
    result = sandbox.run("apply")
    assert result.returncode == 0, result.stderr
    assert rec.runs() == []
    assert hook_steps(sandbox, unrelated) == []
    assert console.workers() == workers
