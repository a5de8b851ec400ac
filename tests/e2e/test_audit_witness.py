"""The daemon's witness command as operators set it up: heads sent to a syslog server with
`logger`, turned into a witness file by the documented recipe, and every attack on the log caught;
a log replaced under the daemon shows as a fork; a broken witness never holds a pass."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from reconciler.audit.witness import read_head
from tests.helpers.attacks import log_files, rechain, rotate, run_attacks, save, verify
from tests.helpers.daemon import Daemon, wait_for
from tests.helpers.net import free_port, http_get
from tests.helpers.recipes import recipe, replaced, run_recipe
from tests.helpers.sandbox import Sandbox


class SyslogReceiver:
    """A syslog server on 127.0.0.1 (TCP) that appends every line it receives to a file, as a
    real one writes what it receives to disk. One connection at a time, each bounded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            with connection, self.path.open("ab") as out:
                connection.settimeout(10)
                try:
                    while chunk := connection.recv(65536):
                        out.write(chunk)
                except OSError:
                    continue

    def close(self) -> None:
        self._socket.close()
        self._thread.join(timeout=10)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[SyslogReceiver]:
    server = SyslogReceiver(tmp_path / "remote" / "gw1.log")
    yield server
    server.close()


def change(sandbox: Sandbox, number: int) -> None:
    """A push that changes one target: another port for a profile."""
    sandbox.state.profile("relay", f'url = "smtps://relay.example.com:{4000 + number}"\n')


def head_in(path: Path, var: Path, after: int = 0) -> int:
    """The seq of the log's head once it is beyond `after` and `path` holds it, else 0."""
    head = read_head(var / "audit.jsonl")
    if head is None or head.seq <= after or not path.exists():
        return 0
    return head.seq if head.line().strip() in path.read_text(errors="replace") else 0


def test_heads_sent_to_syslog_by_the_documented_witness_catch_every_attack(
    sandbox: Sandbox,
    receiver: SyslogReceiver,
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    documented = recipe("toml", "reconciler-audit-head")
    logger = tomllib.loads(documented)["audit"]["witness"][0]
    if shutil.which(logger) is None:
        pytest.skip(f"{logger} (util-linux) is not installed")
    sandbox.extra = replaced(
        documented, {"logs.example.net": "127.0.0.1", '"514"': f'"{receiver.port}"'}
    )
    daemon = start_daemon()
    var = sandbox.var
    seq = wait_for(lambda: head_in(receiver.path, var), "the first pass's head", daemon)
    for number in range(1, 7):
        change(sandbox, number)
        seq = wait_for(
            lambda after=seq: head_in(receiver.path, var, after), f"push {number}'s head", daemon
        )
        if number in (2, 4):
            rotate(var)
    assert daemon.stop() == 0
    assert len(log_files(var)) == 3

    script = replaced(
        recipe("sh", "reconciler-audit-head"),
        {"/var/log/remote/gw1.example.net.log": str(receiver.path)},
    )
    done = run_recipe(script, tmp_path, sandbox.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "match" in done.stdout
    heads = tmp_path / "heads-syslog.txt"
    assert len(heads.read_text().splitlines()) >= 7
    said = run_attacks(log_files(var), heads, tmp_path / "attacks")
    assert "truncated: witnessed seq" in said["cut the last records"]


def test_a_log_replaced_under_the_running_daemon_is_a_fork(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    witnessed = tmp_path / "heads.txt"
    sandbox.extra = f'[audit]\nwitness = ["/bin/sh", "-c", "cat >> {witnessed}"]\n'
    daemon = start_daemon()
    wait_for(lambda: head_in(witnessed, sandbox.var), "the first head witnessed", daemon)
    genuine = read_head(sandbox.var / "audit.jsonl")
    assert genuine is not None
    # A fresh valid chain, longer than the genuine one, renamed over the log.
    forged = tmp_path / "forged.jsonl"
    records: list[dict[str, object]] = [
        {"ts": "2020-01-01T00:00:00.000000Z", "seq": n, "event": "warning", "revision": None,
         "prev_hash": "", "reason": "nothing happened"}
        for n in range(1, genuine.seq + 20)
    ]  # fmt: skip
    log = [(forged, records)]
    rechain(log)
    save(log)
    forged.rename(sandbox.var / "audit.jsonl")
    change(sandbox, 1)
    wait_for(
        lambda: (head := read_head(sandbox.var / "audit.jsonl")) and head.seq > genuine.seq + 19,
        "the daemon writing on the replacement",
        daemon,
    )
    wait_for(lambda: head_in(witnessed, sandbox.var), "its head witnessed", daemon)
    assert daemon.stop() == 0
    assert verify(sandbox.var / "audit.jsonl").returncode == 0, "a valid chain, as far as it goes"
    checked = verify(sandbox.var / "audit.jsonl", witnessed)
    assert checked.returncode == 1
    failure = next(line for line in checked.stderr.splitlines() if "fails its witnesses" in line)
    assert f"forked: record {genuine.seq} differs from its witness" in failure
    assert "witnessed later, matches" in failure


def metric(port: int, name: str) -> float | None:
    code, text = http_get(f"http://127.0.0.1:{port}/metrics")
    for line in text.splitlines() if code == 200 else ():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def test_a_hanging_witness_never_holds_the_next_pass(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    gate, witnessed = tmp_path / "gate", tmp_path / "heads.txt"
    gate.touch()
    # Holds each head until the gate is removed, then appends it.
    script = f'head=$(cat); while [ -e {gate} ]; do sleep 0.05; done; echo "$head" >> {witnessed}'
    sandbox.extra = f"[audit]\nwitness = {json.dumps(['/bin/sh', '-c', script])}\n"
    sandbox.extra += "witness_timeout_s = 60\n"
    daemon = start_daemon()
    start_head = read_head(sandbox.var / "audit.jsonl")
    assert start_head is not None
    held = wait_for(lambda: _witnesses(gate), "the first witness, held", daemon)
    passes = len(daemon.passes())
    change(sandbox, 1)
    wait_for(lambda: len(daemon.passes()) > passes, "the next pass", daemon)
    assert daemon.passes()[-1]["outcome"] == "converged"
    assert _witnesses(gate) == held, "the pass ended while the first witness was still held"
    assert not witnessed.exists()
    gate.unlink()
    last = read_head(sandbox.var / "audit.jsonl")
    assert last is not None
    assert last.seq > start_head.seq
    wait_for(lambda: head_in(witnessed, sandbox.var), "the newest head witnessed", daemon)
    assert daemon.stop() == 0
    assert witnessed.read_text().splitlines()[-1] == last.line().strip()


@pytest.mark.parametrize("broken", ["exits-non-zero", "is-missing"])
def test_a_failing_witness_is_counted_reported_once_and_passes_go_on(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], tmp_path: Path, broken: str
) -> None:
    port = free_port()
    argv = (
        ["/bin/sh", "-c", "cat > /dev/null; echo store down; exit 2"]
        if broken == "exits-non-zero"
        else [str(tmp_path / "no-such-witness")]
    )
    sandbox.extra = f'metrics_address = "127.0.0.1:{port}"\n[audit]\nwitness = {json.dumps(argv)}\n'
    daemon = start_daemon()
    for number in (1, 2):
        before = len(daemon.passes())
        change(sandbox, number)
        wait_for(lambda count=before: len(daemon.passes()) > count, f"pass {number}", daemon)
        assert daemon.passes()[-1]["outcome"] == "converged"
    heads = len(daemon.log_events("audit.head"))
    assert heads == 3, "after the first pass (the log was empty at start), after each push"
    wait_for(
        lambda: metric(port, "reconciler_audit_witness_failures_total") == heads,
        "every witness failure counted",
        daemon,
    )
    (reported,) = daemon.log_events("audit.witness_failed")
    assert reported["level"] == "warning"
    want = "exited 2" if broken == "exits-non-zero" else f"could not start {argv[0]}: No such file"
    assert str(reported["reason"]).startswith(want)
    assert daemon.stop() == 0


def _witnesses(gate: Path) -> list[int]:
    """pids of the witness processes held at `gate`. Not their children: the shell forks one
    for each `sleep` (and for `$(cat)`), which shows the shell's command line until it execs."""
    found = {
        p.pid: p.info["ppid"]
        for p in psutil.process_iter(["cmdline", "ppid"])
        if p.info["cmdline"] and str(gate) in " ".join(p.info["cmdline"])
    }
    return sorted(pid for pid, parent in found.items() if parent not in found)


def test_a_reload_switches_the_witness_and_publishes_the_head_to_it(
    sandbox: Sandbox, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    witness = '[audit]\nwitness = ["/bin/sh", "-c", "cat >> {}"]\n'
    sandbox.extra = witness.format(first)
    daemon = start_daemon()
    head = read_head(sandbox.var / "audit.jsonl")
    assert head is not None
    wait_for(lambda: head_in(first, sandbox.var), "the head at the first witness", daemon)
    sandbox.extra = witness.format(second)
    sandbox.write_config()
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: head_in(second, sandbox.var), "the head at the new witness", daemon)
    assert second.read_text() == head.line()
    change(sandbox, 1)
    wait_for(lambda: head_in(second, sandbox.var, head.seq), "the next head", daemon)
    assert daemon.stop() == 0
    assert first.read_text() == head.line(), "the old witness got nothing after the reload"
