"""Every output through the boundary: JSON that parses, no terminal control, nothing dropped.

Hostile text (key markers, control characters, what a remote server says) reaches the outputs
from pushed files and from the network; each output scrubs it field by field.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from reconciler.core.secret import KEY_MARKER
from reconciler.support import devpki
from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.net import free_port
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki
from tests.helpers.tls import LoopbackServer, TlsServer, server_context

# What a terminal acts on: C0 controls other than newline and tab, DEL and the C1 controls.
TERMINAL_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
# Key markers and a key body's first characters, made here: the repository holds no key text.
BEGIN = f"-----BEGIN {KEY_MARKER}"
KEY_BODY_START = base64.b64encode(devpki.make_ca("Marker CA").key_pem[40:60]).decode()[:23]
KEY_TEXT = re.compile(rb"-----BEGIN[ A-Z]*PRIVATE KEY", re.IGNORECASE)


def run(box: Sandbox, *args: str) -> subprocess.CompletedProcess[bytes]:
    return box.run_bytes(*args)


def assert_no_control(data: bytes) -> None:
    found = TERMINAL_CONTROL.search(data)
    assert found is None, data[max(0, found.start() - 40) : found.end() + 40]


@pytest.fixture
def applied(sandbox: Sandbox) -> Sandbox:
    result = run(sandbox, "apply")
    assert result.returncode == 0, result.stderr
    return sandbox


# --- an unterminated key marker: every JSON output still parses ---------------------------------

MARKERS = {
    "toml-key": ("profiles/marked.toml", f'"{BEGIN}" = 1\n'),
    "comment-and-key": (
        "profiles/marked.toml",
        f'# -----BEGIN EC {KEY_MARKER}\n"x-----END {KEY_MARKER}" = 2\n',
    ),
    # A stray file's name is quoted by a warning: the state stays valid and applies.
    "lower-case-file-name": (f"trust/-----begin rsa {KEY_MARKER.lower()} notes.txt", "notes\n"),
}


@pytest.mark.parametrize(("name", "content"), MARKERS.values(), ids=MARKERS.keys())
def test_an_unterminated_key_marker_leaves_every_json_output_whole(
    applied: Sandbox, name: str, content: str
) -> None:
    applied.state.write(name, content)
    run(applied, "apply")  # recorded in the audit log too, rejected or applied
    for args in (
        ("validate", "--format", "json"),
        ("validate", "--format", "gitlab"),
        ("plan", "--json"),
        ("status", "--json"),
    ):
        result = run(applied, *args)
        document = json.loads(result.stdout)  # the whole document, not a cut-off prefix
        assert document, args
        assert KEY_TEXT.search(result.stdout) is None, args
    shown = run(applied, "audit", "show", "--json").stdout.splitlines()
    assert [json.loads(line)["seq"] for line in shown] == list(range(1, len(shown) + 1))
    status = run(applied, "status").stdout.decode()
    # Every part of the text view is there, after the line that quotes the marker.
    for label in ("desired state   ", "identity  ", "trust  ", "recent passes"):
        assert label in status, status


# --- text from pushed file names and from servers: escaped in every view -------------------------

HOSTILE_NAME = "evil\x1b[2J\x1b]0;owned\x07\r\nerror: forged line"


def test_status_escapes_control_characters_of_a_file_name(applied: Sandbox) -> None:
    (applied.state.path / "trust" / f"{HOSTILE_NAME}.pem").write_bytes(b"x\n")
    assert run(applied, "apply").returncode == 1
    for args in (("status",), ("status", "--json"), ("plan",), ("validate",), ("apply",)):
        result = run(applied, *args)
        assert_no_control(result.stdout + result.stderr)
        assert b"forged line" in result.stdout + result.stderr, args  # shown, escaped
    lines = run(applied, "status").stdout.decode().splitlines()
    assert not any(line.startswith("error: forged line") for line in lines)


def _raw_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda box: box.state.write("gateway.toml", f'"{BEGIN}\\n{KEY_BODY_START}" = 1\n'),
        lambda box: (box.state.path / "trust" / f"{HOSTILE_NAME}.pem").write_bytes(b"x\n"),
    ],
    ids=["key-as-toml-key", "control-characters-in-a-name"],
)
def test_readyz_shows_a_rejected_finding_through_the_boundary(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], mutate: Callable[[Sandbox], None]
) -> None:
    port = free_port()
    sandbox.extra = f'metrics_address = "127.0.0.1:{port}"\n'
    mutate(sandbox)  # the first state is rejected: /readyz says why, unauthenticated
    daemon = start_daemon(wait=False)
    wait_for(lambda: daemon.passes(outcome="rejected"), "the rejection", daemon)
    code, body = _raw_get(f"http://127.0.0.1:{port}/readyz")
    assert code == 503
    assert b"rejected" in body
    assert KEY_TEXT.search(body) is None
    assert b"MIIEvQIBADANBgkqhkiG9w0" not in body
    assert_no_control(body)
    assert body.count(b"\n") == 1
    assert body.endswith(b"\n")
    assert daemon.stop() == 0


class _SmtpSays(LoopbackServer):
    """An SMTP server whose replies carry terminal escapes: a partner's banner, say."""

    def __init__(self, replies: dict[str, bytes]) -> None:
        super().__init__()
        self._replies = replies

    def handle(self, conn: socket.socket) -> None:
        conn.sendall(self._replies["banner"])
        with conn.makefile("rb") as reader:
            for raw in reader:
                verb = raw.split(b" ", 1)[0].strip().upper().decode()
                if verb not in self._replies:
                    return
                conn.sendall(self._replies[verb])


ESCAPES = b"\x1b]0;owned\x07\x1b[2J\x1b[31m\x9b1m"

SERVERS = {
    "banner": {"banner": b"554 " + ESCAPES + b" go away\r\n"},
    "starttls-refused": {
        "banner": b"220 mx ready\r\n",
        "EHLO": b"250-mx\r\n250 STARTTLS\r\n",
        "STARTTLS": b"454 " + ESCAPES + b" not now\r\n",
    },
    "multi-line-banner": {"banner": b"421-" + ESCAPES + b"\r\n421 closing\r\n"},
}


@pytest.mark.parametrize("replies", SERVERS.values(), ids=SERVERS.keys())
def test_probe_escapes_what_a_server_says(sandbox: Sandbox, replies: dict[str, bytes]) -> None:
    with _SmtpSays(replies) as server:
        for name in ("core", "relay"):
            sandbox.state.remove(f"profiles/{name}.toml")
        sandbox.state.profile(
            "partner",
            f'url = "smtp://127.0.0.1:{server.port}"\ntransport_encryption = "starttls-required"\n',
        )
        for args in (("probe",), ("probe", "--json")):
            result = run(sandbox, *args)
            assert result.returncode == 1
            assert_no_control(result.stdout + result.stderr)
        document = json.loads(run(sandbox, "probe", "--json").stdout)
        assert "owned" in document[0]["detail"]  # what the server said, escaped


def test_probe_escapes_a_hostile_certificate_subject(sandbox: Sandbox, pki: Pki) -> None:
    leaf = devpki.issue(pki.intermediate, "evil\x1b[2J\x9bcn.example")
    with TlsServer(server_context(leaf.cert_pem, leaf.key_pem)) as server:
        for name in ("core", "relay"):
            sandbox.state.remove(f"profiles/{name}.toml")
        sandbox.state.profile("partner", f'url = "smtps://127.0.0.1:{server.port}"\n')
        for args in (("probe",), ("probe", "--json")):
            result = run(sandbox, *args)
            assert_no_control(result.stdout + result.stderr)
            assert b"evil" in result.stdout, args
