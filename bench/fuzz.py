"""`python -m bench.fuzz --examples N`: hostile-input fuzzing of validate, plan, apply and status.

Each example starts from a valid, applied sandbox (a throwaway PKI made at start), damages it
(odd file names, links in and out, FIFOs, sockets, huge and deep files, mutated PEM, hostile
gateway.toml values, broken var files and targets, unknown RECONCILER_* variables), runs the
commands in process (every fourth example as `python -m reconciler` processes), then repairs
STATE and checks that the next good push applies; then one daemon goes through damaged states in
a row and must apply the good push after each. Properties:
no uncaught exception, exit codes only 0, 1 or 2 (and status's 3 to 5), nothing written when the
state is rejected, no key material in any output or in the audit log, every command back within
its time limit, the audit chain intact. tests/e2e/test_fuzz.py runs a few hundred examples;
this runs many more and reports how many ran and what was found.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.workspace import gateway_toml
from reconciler import cli
from reconciler.support import devpki

EXIT_CODES = frozenset({0, 1, 2})
#: `status` exits with a monitoring check's verdict: 3 rejected, 4 failed, 5 not serving too.
STATUS_EXIT_CODES = EXIT_CODES | {3, 4, 5}


def _allowed(argv: tuple[str, ...]) -> frozenset[int]:
    return STATUS_EXIT_CODES if argv[:1] == ("status",) else EXIT_CODES


COMMAND_TIMEOUT_S = 60.0
CLI_EVERY = 4
"""One example in this many runs its commands through `python -m reconciler` processes."""
DAEMON_WAIT_S = 30.0

GATEWAY = gateway_toml().decode()


@dataclass
class World:
    """The sandbox one example runs in, and the key material no output may show."""

    base: Path
    key_lines: list[str]
    chain: bytes
    key: bytes
    ca: bytes
    findings: list[str] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def var(self) -> Path:
        return self.base / "var"

    @property
    def config(self) -> Path:
        return self.base / "reconciler.toml"

    def write_good_state(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)
        (self.state / "tls").mkdir(parents=True)
        (self.state / "trust").mkdir()
        (self.state / "profiles").mkdir()
        (self.state / "gateway.toml").write_text(GATEWAY)
        (self.state / "tls" / "cert.pem").write_bytes(self.chain)
        (self.state / "tls" / "key.pem").write_bytes(self.key)
        (self.state / "trust" / "partner-ca.pem").write_bytes(self.ca)
        (self.state / "profiles" / "relay.toml").write_text('url = "smtps://relay.example.com"\n')


def make_world(base: Path) -> World:
    root_ca = devpki.make_ca("Fuzz Root CA")
    leaf = devpki.issue(root_ca, "gateway.fuzz.test")
    other = devpki.make_ca("Fuzz Partner CA")
    key_lines = [line for line in leaf.key_pem.decode().splitlines() if "-----" not in line]
    world = World(base, key_lines, leaf.cert_pem + root_ca.cert_pem, leaf.key_pem, other.cert_pem)
    for directory in (world.root / "data", world.root / "nginx", base / "trust"):
        directory.mkdir(parents=True, exist_ok=True)
    world.config.write_text(
        f'state_dir = "{world.state}"\nroot = "{world.root}"\nvar_dir = "{world.var}"\n'
        f'trust_store = "directory"\ntrust_dir = "{base / "trust"}"\n'
        'nginx_ssl_on = false\nlog_format = "json"\n'
    )
    world.write_good_state()
    return world


# --- damage ----------------------------------------------------------------------------------

_NAMES = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
_KEY = "PRIVATE" + " KEY"
_HOSTILE_VALUES = [
    '"tls/cert\\u0000.pem"',
    '"../../etc/passwd"',
    '"/etc/shadow"',
    '"..2026_01_01/cert.pem"',
    '"tls/cert.pem\\n"',
    '"' + "a/" * 3000 + '"',
    "9" * 400,
    "[" * 200 + "]" * 200,
    # An inline key (a fake one); the marker is built here so that key scanners see no key.
    '"""-----BEGIN ' + _KEY + "-----\nMIIB\n-----END " + _KEY + '-----"""',
]


def _pem_mutation(pem: bytes, how: int, at: int) -> bytes:
    if how == 0:
        return pem[: at % max(1, len(pem))]
    if how == 1:
        flip = bytearray(pem)
        flip[at % len(flip)] ^= 0x20
        return bytes(flip)
    if how == 2:
        return pem.lower()
    if how == 3:
        return pem * 3
    return pem.replace(b"CERTIFICATE", b"PRIVATE KEY")


@st.composite
def damages(draw: st.DrawFn) -> list[Callable[[World], None]]:
    ops: list[Callable[[World], None]] = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(_WEIGHTED))
        ops.append(_OPS[kind](draw))
    return ops


def _op_stray(draw: st.DrawFn) -> Callable[[World], None]:
    folder, name, data = (
        draw(st.sampled_from(["trust", "profiles"])),
        draw(_NAMES),
        draw(st.binary(max_size=64)),
    )

    def apply(w: World) -> None:
        with contextlib.suppress(OSError):
            (w.state / folder / os.fsdecode(name)).write_bytes(data)

    return apply


def _op_pem(draw: st.DrawFn) -> Callable[[World], None]:
    which = draw(
        st.sampled_from(["trust/partner-ca.pem", "tls/cert.pem", "tls/key.pem", "trust/new.pem"])
    )
    how, at = draw(st.integers(0, 4)), draw(st.integers(0, 10_000))

    def apply(w: World) -> None:
        source = {"tls/key.pem": w.key, "tls/cert.pem": w.chain}.get(which, w.ca)
        (w.state / which).write_bytes(_pem_mutation(source, how, at))

    return apply


def _op_gateway(draw: st.DrawFn) -> Callable[[World], None]:
    field_name = draw(st.sampled_from(["cert", "key"]))
    value = draw(st.sampled_from(_HOSTILE_VALUES))
    raw = draw(st.booleans())
    junk = draw(st.binary(max_size=200))

    def apply(w: World) -> None:
        if raw:
            (w.state / "gateway.toml").write_bytes(junk)
            return
        text = GATEWAY.replace(f'{field_name} = "tls/{field_name}.pem"', f"{field_name} = {value}")
        (w.state / "gateway.toml").write_text(text)

    return apply


def _op_link(draw: st.DrawFn) -> Callable[[World], None]:
    where = draw(
        st.sampled_from(["trust/linked.pem", "tls/cert.pem", "profiles/linked.toml", "trust"])
    )
    target = draw(
        st.sampled_from(["/etc/passwd", "/dev/zero", "../gateway.toml", "nowhere", ".", "/"])
    )

    def apply(w: World) -> None:
        path = w.state / where
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        path.symlink_to(target)

    return apply


def _op_special(draw: st.DrawFn) -> Callable[[World], None]:
    where = draw(
        st.sampled_from(
            [
                "state:trust/fifo.pem",
                "state:tls/key.pem",
                "state:.git/HEAD",
                "root:data/cert.pem",
                "root:data/smtp-inbound.json",
                "root:nginx/ssl.conf",
                "var:journal.json",
                "var:status.json",
            ]
        )
    )
    kind = draw(st.sampled_from(["fifo", "dir", "socket", "huge", "empty", "junk", "zero-link"]))
    junk = draw(st.binary(max_size=100))

    def apply(w: World) -> None:
        top, _, rel = where.partition(":")
        path = {"state": w.state, "root": w.root, "var": w.var}[top] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "socket":
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(path))
        elif kind == "huge":
            with path.open("wb") as handle:
                handle.truncate((1 << 20) + 1)
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "junk":
            path.write_bytes(junk)
        else:
            path.symlink_to("/dev/zero")

    return apply


def _op_env(draw: st.DrawFn) -> Callable[[World], None]:
    name = draw(
        st.sampled_from(["RECONCILER_VERIFY_CONSOLE", "RECONCILER_X", "RECONCILER_METRICS_ADDRESS"])
    )
    value = draw(st.sampled_from(["127.0.0.1:1", "nonsense", "", "[::1]:99999"]))

    def apply(w: World) -> None:
        os.environ[name] = value

    return apply


def _op_good(draw: st.DrawFn) -> Callable[[World], None]:
    host = draw(st.sampled_from(["relay2.example.com", "mx.example.net"]))
    extra = draw(st.booleans())

    def apply(w: World) -> None:
        (w.state / "profiles" / "relay.toml").write_text(f'url = "smtps://{host}"\n')
        if extra:
            (w.state / "trust" / "copy-ca.crt").write_bytes(w.ca)

    return apply


_OPS: dict[str, Callable[[st.DrawFn], Callable[[World], None]]] = {
    "good": _op_good,
    "stray": _op_stray,
    "pem": _op_pem,
    "gateway": _op_gateway,
    "link": _op_link,
    "special": _op_special,
    "env": _op_env,
}


# Unknown variables stop every command before it reads anything: rarely, or they hide the rest.
_WEIGHTED = [name for name in sorted(_OPS) for _ in range(1 if name == "env" else 4)]


# --- running and checking --------------------------------------------------------------------


class PropertyBrokenError(AssertionError):
    """A property broken by an example."""


@contextlib.contextmanager
def _environment(world: World) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ["RECONCILER_CONFIG"] = str(world.config)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_command(world: World, *argv: str, through_cli: bool = False) -> tuple[int, str]:
    """One command within COMMAND_TIMEOUT_S: (exit code, stdout + stderr). In this process, or
    with `through_cli` as its own `python -m reconciler` process, as an operator runs it."""
    if through_cli:
        return _run_process(*argv)
    out = io.StringIO()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                outcome["code"] = cli.main(list(argv))
        except BaseException as exc:
            outcome["exc"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(COMMAND_TIMEOUT_S)
    if thread.is_alive():
        raise PropertyBrokenError(f"{' '.join(argv)}: still running after {COMMAND_TIMEOUT_S:g} s")
    if "exc" in outcome:
        raise PropertyBrokenError(f"{' '.join(argv)}: raised {outcome['exc']!r}")
    code = outcome["code"]
    assert isinstance(code, int)
    if code not in _allowed(argv):
        raise PropertyBrokenError(f"{' '.join(argv)}: exit code {code}: {out.getvalue()[-400:]}")
    return code, out.getvalue()


def _run_process(*argv: str) -> tuple[int, str]:
    command = [sys.executable, "-m", "reconciler", *argv]
    try:
        done = subprocess.run(
            command,
            env=dict(os.environ),
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise PropertyBrokenError(
            f"{' '.join(argv)}: still running after {COMMAND_TIMEOUT_S:g} s"
        ) from exc
    text = (done.stdout + done.stderr).decode("utf-8", "backslashreplace")
    if "Traceback (most recent call last)" in text:
        raise PropertyBrokenError(f"{' '.join(argv)}: a traceback: {text[-600:]}")
    if done.returncode not in _allowed(argv):
        raise PropertyBrokenError(f"{' '.join(argv)}: exit code {done.returncode}: {text[-400:]}")
    return done.returncode, text


def _targets(world: World) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for top in (world.root, world.base / "trust"):
        for path in sorted(top.rglob("*")):
            if path.is_symlink():
                found[str(path)] = b"-> " + os.fsencode(os.readlink(path))
            elif path.is_file():
                found[str(path)] = path.read_bytes()
    return found


def _no_key(world: World, where: str, text: str) -> None:
    for line in world.key_lines:
        if line in text:
            raise PropertyBrokenError(f"{where}: shows key material")


def check_example(
    world: World, ops: list[Callable[[World], None]], *, through_cli: bool = False
) -> None:
    """Damage, run every command, check the properties, repair, check the next push applies."""
    from reconciler.audit.verifier import verify

    with _environment(world):
        for op in ops:
            with contextlib.suppress(OSError):  # an earlier op may have removed its folder
                op(world)
        valid, text = run_command(world, "validate", through_cli=through_cli)
        _no_key(world, "validate", text)
        before = _targets(world)
        outputs = [text]
        for argv in (("plan",), ("plan", "--json"), ("status",), ("status", "--json"), ("apply",)):
            code, text = run_command(world, *argv, through_cli=through_cli)
            outputs.append(text)
            _no_key(world, " ".join(argv), text)
        if valid == 1 and _targets(world) != before:
            raise PropertyBrokenError("apply changed targets although validate rejected the state")
    audit = world.var / "audit.jsonl"
    if audit.exists():
        _no_key(world, "audit log", audit.read_text("utf-8"))
        result = verify([audit])
        if not result.ok:
            raise PropertyBrokenError(f"audit chain broken: {result.first_bad}")
    _repair(world)
    with _environment(world):
        code, text = run_command(world, "apply", through_cli=through_cli)
        if code != 0:
            raise PropertyBrokenError(f"the next good push did not apply: {text[-600:]}")


def _repair(world: World) -> None:
    """The operator's fix: a good push, and the damaged targets and var files moved away."""
    world.write_good_state()
    for top in (world.root / "data", world.root / "nginx"):
        if not top.is_dir() or top.is_symlink():
            continue
        for path in top.iterdir():
            if path.is_symlink() or not path.is_file():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    for name in ("journal.json", "status.json"):
        path = world.var / name
        if path.is_symlink() or path.exists():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _examples(
    examples: int,
    max_seconds: float | None,
    check: Callable[[int, list[Callable[[World], None]]], None],
) -> tuple[int, list[str]]:
    """`check(n, damage)` for up to `examples` hypothesis examples, or as many as fit in
    `max_seconds`: (how many ran, the properties they broke)."""
    ran = 0
    stop_at = time.monotonic() + max_seconds if max_seconds else None

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(damages())
    def one(ops: list[Callable[[World], None]]) -> None:
        nonlocal ran
        if stop_at is not None and time.monotonic() > stop_at:
            return  # out of time: the rest are skipped, not counted
        ran += 1
        check(ran, ops)

    failures: list[str] = []
    try:
        one()
    except PropertyBrokenError as exc:
        failures.append(str(exc))
    except ExceptionGroup as group:  # hypothesis found several distinct failures
        failures += [str(exc) for exc in group.exceptions]
    return ran, failures


def run_fuzz(examples: int, max_seconds: float | None = None) -> tuple[int, list[str]]:
    """Run `examples` examples, or as many as fit in `max_seconds`; (how many ran, the failures
    found)."""
    base = Path(tempfile.mkdtemp(prefix="reconciler-fuzz-"))
    try:
        world = make_world(base)
        with _environment(world):
            code, text = run_command(world, "apply")
        if code != 0:
            raise SystemExit(f"fuzz: the starting state does not apply: {text}")

        def check(n: int, ops: list[Callable[[World], None]]) -> None:
            # Every CLI_EVERY-th example runs each command as its own process, as operators do.
            check_example(world, ops, through_cli=n % CLI_EVERY == 0)

        return _examples(examples, max_seconds, check)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_daemon_fuzz(examples: int, max_seconds: float | None = None) -> tuple[int, list[str]]:
    """One `reconciler run` daemon through `examples` damaged states in a row: after each, a
    good push (with a new profile, so a new revision) must be applied, and the daemon must stay
    up and stop cleanly on SIGTERM. (how many ran, the failures found)."""
    base = Path(tempfile.mkdtemp(prefix="reconciler-fuzz-daemon-"))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        world = make_world(base)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        env["RECONCILER_CONFIG"] = str(world.config)
        with (base / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run"],
                env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        profiles = world.root / "data" / "server-profiles.json"

        def check(n: int, ops: list[Callable[[World], None]]) -> None:
            with _environment(world):  # an op may set variables: this process gets them back
                for op in ops:
                    with contextlib.suppress(OSError):
                        op(world)
            _repair(world)
            marker = f"good-{n:05d}"
            (world.state / "profiles" / f"{marker}.toml").write_text(
                'url = "smtps://relay.example.com:4465"\n'
            )
            deadline = time.monotonic() + DAEMON_WAIT_S
            while marker not in _read_text(profiles):
                assert daemon is not None
                if daemon.poll() is not None:
                    raise PropertyBrokenError(f"the daemon exited with {daemon.returncode}")
                if time.monotonic() > deadline:
                    raise PropertyBrokenError(
                        f"the daemon did not apply the good push {marker} within "
                        f"{DAEMON_WAIT_S:g} s"
                    )
                time.sleep(0.05)  # polling a file the daemon writes, with a deadline

        ran, failures = _examples(examples, max_seconds, check)
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(DAEMON_WAIT_S)
        except subprocess.TimeoutExpired:
            failures.append(f"the daemon did not stop within {DAEMON_WAIT_S:g} s of SIGTERM")
        else:
            if code != 0:
                failures.append(f"the daemon exited {code} on SIGTERM")
        log_text = (base / "daemon.log").read_text("utf-8", "backslashreplace")
        if "Traceback (most recent call last)" in log_text:
            failures.append("the daemon's log holds a traceback")
        _no_key_in(world, "the daemon's log", log_text, failures)
        return ran, failures
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8", "backslashreplace")
    except OSError:
        return ""


def _no_key_in(world: World, where: str, text: str, failures: list[str]) -> None:
    try:
        _no_key(world, where, text)
    except PropertyBrokenError as exc:
        failures.append(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--daemon-examples", type=int, default=200)
    parser.add_argument(
        "--max-seconds", type=float, default=600, help="stop each of the two runs after this long"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    ran, failures = run_fuzz(args.examples, args.max_seconds)
    took = time.monotonic() - started
    print(f"fuzz: {ran} examples in {took:.0f} s; {len(failures)} failure(s)")
    started = time.monotonic()
    daemon_ran, daemon_failures = run_daemon_fuzz(args.daemon_examples, args.max_seconds)
    took = time.monotonic() - started
    print(f"fuzz, daemon: {daemon_ran} examples in {took:.0f} s; {len(daemon_failures)} failure(s)")
    failures += daemon_failures
    for failure in failures:
        print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
