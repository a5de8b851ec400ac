"""Operational logs: the structlog pipeline beside the audit log, both fed from the same events.

Every pass step goes through `reconciler.reconcile.events.Recorder`, which first appends the
audit record and then emits the same event, with its `seq`, here. Operational logs are for the
operator watching now (stderr, console or JSON); the audit log is the durable, verifiable
record. Other diagnostics use `get_logger(name)` directly.

The pipeline is pure processors and exactly one writer (structlog's WriteLogger on one stream):

    merge contextvars -> redact secrets -> add level -> UTC ISO timestamp
        -> (JSON: format exceptions -> scrub them -> JSONRenderer
            | console: ConsoleRenderer, tracebacks scrubbed)

Every field goes through the output boundary (`reconciler.support.redact`) once, before it is
rendered, never the rendered line: a `SecretBytes` or bytes value becomes a placeholder, text is
scrubbed (an audit record's values, already scrubbed, pass as they are), anything else becomes
its scrubbed text, and a traceback is scrubbed as one text. On the console (people, one line per
event) newlines and tabs inside a value are escaped too; JSON escapes them itself.

Everything else the process would write to stderr comes through the same pipeline once
`configure_logging` has run: Python warnings (a dependency's deprecation, say), records of the
standard `logging` module (third-party libraries), and uncaught exceptions, in the main thread or
any other. With `log_format = "json"` every line on stderr is then one JSON object.

structlog takes longer to import than `reconciler validate` may spend starting, so this
module imports it only when a log line is emitted or `configure_logging` runs. An unconfigured
first use configures the default pipeline (stderr), so nothing ever lands on stdout, which
belongs to command output such as `plan --json`.
"""

from __future__ import annotations

import importlib
import logging as logging_module
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO, cast

if TYPE_CHECKING:
    import threading
    from types import TracebackType

from reconciler.core.secret import SecretBytes
from reconciler.support.redact import made, scrub, scrub_line

__all__ = [
    "Level",
    "LogFormat",
    "Logger",
    "chosen_format",
    "configure_logging",
    "get_logger",
    "redact_secrets",
]

LogFormat = Literal["json", "console"]
Level = Literal["debug", "info", "warning", "error"]

REDACTED: Final = "<redacted>"
_chosen: list[LogFormat] = []
_LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _redact(value: object, clean: Callable[[object], str] = scrub) -> object:
    if isinstance(value, SecretBytes):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes redacted>"
    if isinstance(value, str):
        return clean(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {clean(str(key)): _redact(item, clean) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_redact(item, clean) for item in value)
    if isinstance(value, list | set | frozenset):
        return [_redact(item, clean) for item in value]
    return clean(str(value))  # a path, a time, an object: its text, as any other text


def redact_secrets(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: every field through the output boundary (exc_info is formatted later, and
    its text scrubbed then)."""
    return {
        key: value if key == "exc_info" else _redact(value) for key, value in event_dict.items()
    }


def _redact_one_line(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`redact_secrets` for the console: a value's newline cannot start a forged line."""
    return {
        key: value if key == "exc_info" else _redact(value, scrub_line)
        for key, value in event_dict.items()
    }


def _scrub_exception(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """After format_exc_info: the traceback's text through the boundary (an exception's
    message may quote a file name or the bytes it choked on)."""
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = scrub(event_dict["exception"])
    return event_dict


def _scrubbed_traceback(sio: TextIO, exc_info: Any) -> None:
    """The console's exception formatter: a plain traceback (never the local variables, which
    may hold key bytes no redaction can recognise), scrubbed."""
    import traceback

    sio.write("\n" + scrub("".join(traceback.format_exception(*exc_info))).rstrip("\n"))


_UNUSED_BY_STRUCTLOG: Final = ("rich", "better_exceptions")
"""What structlog imports whenever it is installed, only for tracebacks this pipeline turns off
(rich's print local variables, see configure_logging): megabytes of a daemon's memory, and a
developer's venv has rich (through import-linter)."""


_DEFERRED_BY_STRUCTLOG: Final = ("asyncio",)
"""What structlog imports at once but uses only inside its async logging methods, which this
program never calls: asyncio, and through it ssl, are megabytes of a daemon's memory. structlog
gets a stand-in that imports the real module the first time anything of it is used."""


class _OnFirstUse(ModuleType):
    """A module's stand-in: the first attribute asked for imports the real module (it then
    answers for the stand-in). Only ever in sys.modules while structlog is being imported."""

    def __getattr__(self, attribute: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)


def _structlog() -> ModuleType:
    """structlog, imported without the optional libraries it would use for pretty tracebacks,
    and without asyncio until something uses it."""
    loaded = sys.modules.get("structlog")
    if loaded is not None:
        return loaded
    blocked = [name for name in _UNUSED_BY_STRUCTLOG if name not in sys.modules]
    deferred = [name for name in _DEFERRED_BY_STRUCTLOG if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # its import raises ImportError
    for name in deferred:
        sys.modules[name] = _OnFirstUse(name)
    try:
        import structlog
    finally:
        for name in blocked:  # importing them later, elsewhere, works as ever
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
        for name in deferred:  # importing them later, elsewhere, gets the real module
            if isinstance(sys.modules.get(name), _OnFirstUse):
                del sys.modules[name]
    return structlog


def configure_logging(
    fmt: LogFormat | None = None, stream: TextIO | None = None, *, level: Level = "info"
) -> None:
    """Set up the operational log on `stream` (default: stderr at call time).

    `fmt` None means console on a TTY and JSON otherwise; colours only on a TTY and without
    NO_COLOR. Calling it again replaces the configuration (idempotent for the same arguments).
    """
    structlog = _structlog()

    # _Stderr has the part of TextIO a WriteLogger uses: write, flush (and isatty, fileno).
    out = stream if stream is not None else cast(TextIO, _Stderr())
    tty = _isatty(out)
    chosen: LogFormat = fmt if fmt is not None else ("console" if tty else "json")
    _chosen[:] = [chosen]
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        redact_secrets if chosen == "json" else _redact_one_line,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if chosen == "json":
        processors += [
            structlog.processors.format_exc_info,
            _scrub_exception,
            structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
        ]
    else:
        colors = tty and "NO_COLOR" not in os.environ
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=_scrubbed_traceback
        )
        processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached: reconfiguring (SIGHUP, tests' capture_logs) must reach existing loggers.
        cache_logger_on_first_use=False,
    )
    _route_other_output(_LEVELS[level])


def _route_other_output(level: int) -> None:
    """Send warnings, standard-library log records and uncaught exceptions through our
    pipeline, so that nothing reaches stderr as free text."""
    import logging
    import threading
    import warnings

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibHandler):
            root.removeHandler(handler)
    root.addHandler(_StdlibHandler(level))
    root.setLevel(level)
    warnings.showwarning = _show_warning
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    get_logger("py.warnings").warning(
        "python.warning",
        category=category.__name__,
        message=str(message),
        source=f"{filename}:{lineno}",
    )


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    get_logger("reconciler").error(
        "uncaught.exception", exc_info=(kind, value, traceback), error=kind.__name__
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    get_logger("reconciler").error(
        "uncaught.exception",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        error=args.exc_type.__name__,
        thread=args.thread.name if args.thread is not None else None,
    )


class _StdlibHandler(logging_module.Handler):
    """A standard `logging` record (a library's) as one line of ours, named for its logger."""

    def emit(self, record: logging_module.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            fields: dict[str, object] = {}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            get_logger(record.name).log(
                cast(Level, level if level in _LEVELS else "error"),
                record.getMessage(),
                **fields,
            )
        except Exception:  # a log line must never stop the caller
            self.handleError(record)


def chosen_format() -> LogFormat | None:
    """The format `configure_logging` chose last (None before it ran)."""
    return _chosen[0] if _chosen else None


class _Stderr:
    """sys.stderr as it is at each write, not as it was when logging was configured (a test
    harness or a daemoniser may replace it; a stale, closed stream must never be written to)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    def fileno(self) -> int:
        return sys.stderr.fileno()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Logger:
    """A named logger that imports structlog on its first line, not at import time."""

    __slots__ = ("_context", "_name")

    def __init__(self, name: str, context: Mapping[str, object] | None = None) -> None:
        self._name = made(name)  # a logger's name is the code's (or a library's) own
        self._context = dict(context or {})

    def bind(self, **context: object) -> Logger:
        return Logger(self._name, {**self._context, **context})

    def debug(self, event: str, **fields: object) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: object) -> None:
        """An error with the exception being handled attached."""
        self._emit("exception", event, fields)

    def log(self, level: Level, event: str, **fields: object) -> None:
        self._emit(level, event, fields)

    def _emit(self, method: str, event: str, fields: Mapping[str, object]) -> None:
        structlog = _structlog()

        if not structlog.is_configured():
            configure_logging()
        bound = structlog.get_logger().bind(logger=self._name, **self._context)
        getattr(bound, method)(event, **fields)


def get_logger(name: str) -> Logger:
    return Logger(name)
