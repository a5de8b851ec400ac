"""Operational logs: one pipeline, JSON or console, secrets redacted, fed with the audit log."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog
from structlog.testing import capture_logs

from reconciler.core.secret import KEY_MARKER, SecretBytes
from reconciler.support import devpki
from reconciler.support.logging import configure_logging, get_logger

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return devpki.issue(devpki.make_ca(), "gw.example.com").key_pem


def key_body_lines(pem: bytes) -> list[str]:
    return [line for line in pem.decode().splitlines() if line and "-----" not in line]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter (what it imports is then its own); it must succeed."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )


def test_importing_the_modules_does_not_import_structlog() -> None:
    """`reconciler validate` must start fast; structlog alone costs a large part of that."""
    code = (
        "import sys, reconciler.support.logging, reconciler.audit.writer\n"
        "print('structlog' in sys.modules)\n"
        "reconciler.support.logging.get_logger('x')\n"
        "print('structlog' in sys.modules)\n"
    )
    out = _python(code)
    assert out.stdout.split() == ["False", "False"]


def test_logging_loads_no_pretty_traceback_library_which_stays_importable() -> None:
    """structlog imports rich and better_exceptions when installed, only for tracebacks the
    pipeline turns off: the log loads neither, and either imports as usual afterwards."""
    code = (
        "import importlib.util, sys\n"
        "from reconciler.support.logging import configure_logging, get_logger\n"
        "configure_logging('console')\n"
        "get_logger('x').info('hello')\n"
        "print('rich' in sys.modules, 'better_exceptions' in sys.modules)\n"
        "print(importlib.util.find_spec('rich') is None or bool(__import__('rich')))\n"
    )
    out = _python(code)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr


def test_logging_loads_no_asyncio_until_used_and_structlogs_async_methods_still_work() -> None:
    """structlog imports asyncio (and with it ssl) for its async methods only: the log loads
    neither; an async log line then imports the real asyncio and is written, and asyncio
    imported afterwards is the real module."""
    code = (
        "import sys\n"
        "from reconciler.support.logging import _structlog, configure_logging, get_logger\n"
        "configure_logging('json')\n"
        "get_logger('x').info('hello')\n"
        "print('asyncio' in sys.modules, 'ssl' in sys.modules)\n"
        "structlog = _structlog()\n"
        "import asyncio\n"
        "asyncio.run(structlog.get_logger().ainfo('from.async'))\n"
        "print(type(asyncio).__name__, hasattr(asyncio, 'run'))\n"
    )
    out = _python(code)
    assert out.stdout.split() == ["False", "False", "module", "True"], out.stderr
    assert '"event": "from.async"' in out.stderr


def test_json_lines_carry_level_utc_timestamp_and_context() -> None:
    stream = io.StringIO()
    configure_logging("json", stream)
    get_logger("reconciler.daemon").bind(pass_id=7).info("pass.started", revision=REV)
    line = json.loads(stream.getvalue())
    assert line["event"] == "pass.started"
    assert line["level"] == "info"
    assert line["logger"] == "reconciler.daemon"
    assert line["pass_id"] == 7
    assert line["revision"] == REV
    assert line["timestamp"].endswith("Z")
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None


def test_json_is_the_default_off_a_tty_and_levels_filter() -> None:
    stream = io.StringIO()
    configure_logging(None, stream)
    log = get_logger("x")
    log.debug("hidden")
    log.warning("shown", n=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["level"] == "warning"
    configure_logging(None, stream, level="debug")
    log.debug("now shown")
    assert json.loads(stream.getvalue().splitlines()[-1])["event"] == "now shown"


def test_console_without_a_tty_has_no_colours() -> None:
    stream = io.StringIO()
    configure_logging("console", stream)
    get_logger("x").info("pass.succeeded", changes=2)
    text = stream.getvalue()
    assert "pass.succeeded" in text
    assert "changes=2" in text
    assert "\x1b[" not in text


def test_console_is_the_default_on_a_tty_with_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    master, replica = os.openpty()
    try:
        with os.fdopen(replica, "w", closefd=True) as stream:
            configure_logging(None, stream)
            get_logger("x").info("pass.succeeded", changes=2)
            stream.flush()
        text = os.read(master, 65536).decode()
    finally:
        os.close(master)
    assert "pass.succeeded" in text
    assert "\x1b[" in text
    assert not text.lstrip().startswith("{")


def test_configuring_twice_keeps_exactly_one_writer() -> None:
    stream = io.StringIO()
    configure_logging("json", stream)
    configure_logging("json", stream)
    get_logger("x").info("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_first_use_without_configuration_writes_to_stderr_not_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    get_logger("x").info("unconfigured")
    out, err = capsys.readouterr()
    assert out == ""
    assert "unconfigured" in err


def test_capture_logs_sees_bound_context() -> None:
    with capture_logs() as logs:
        get_logger("reconciler.hooks").bind(hook="reload").info("hook.ran", exit_code=0)
    assert logs == [
        {
            "event": "hook.ran",
            "logger": "reconciler.hooks",
            "hook": "reload",
            "exit_code": 0,
            "log_level": "info",
        }
    ]


def _load(der_base64: bytes) -> None:
    key_bytes = der_base64  # a local: tracebacks must not print locals
    raise ValueError(f"unsupported key ({len(key_bytes)} bytes)")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_are_redacted_as_defence_in_depth(fmt: str, key_pem: bytes) -> None:
    stream = io.StringIO()
    configure_logging("json" if fmt == "json" else "console", stream)
    log = get_logger("x")
    log.info(
        "oops", secret=SecretBytes(key_pem), text=key_pem.decode(), raw=key_pem,
        nested={"list": [SecretBytes(key_pem), key_pem.decode()], "pair": (key_pem, 1)},
    )  # fmt: skip
    try:
        raise ValueError("cannot load " + key_pem.decode())
    except ValueError:
        log.exception("failed to load a key")
    body = "".join(key_body_lines(key_pem)).encode()
    try:
        _load(body)
    except ValueError:
        log.exception("failed again")
    text = stream.getvalue()
    assert "<redacted>" in text
    assert "oops" in text
    assert "failed to load a key" in text
    assert "unsupported key" in text
    assert body.decode()[:40] not in text
    for line in key_body_lines(key_pem):
        assert line not in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_field_is_scrubbed_before_rendering_and_the_line_stays_whole(fmt: str) -> None:
    """A key marker without its end in one field cannot swallow the rest of the line (it did
    when the rendered line was scrubbed), and no value can start a forged line or move the
    cursor: a path, a time or an exception's message included."""
    from pathlib import Path

    stream = io.StringIO()
    configure_logging("json" if fmt == "json" else "console", stream)
    marker = f"-----BEGIN {KEY_MARKER} and the rest"
    forged = "x\n2026-01-01 [error    ] forged line"
    get_logger("x").warning(
        "odd", first=marker, path=Path("/tmp/\x1b[2Jevil"), second="after", forged=forged
    )
    try:
        raise OSError(f"cannot open {marker}\x1b]0;title\x07")
    except OSError:
        get_logger("x").exception("failed")
    text = stream.getvalue()
    assert "BEGIN PRIVATE KEY" not in text
    assert "\x1b" not in text
    assert "after" in text  # the field after the marker is there
    lines = text.splitlines()
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert records[0]["second"] == "after"
        assert "cannot open" in records[1]["exception"]
    else:
        assert not any(line.startswith("2026-01-01 [error") for line in lines)
