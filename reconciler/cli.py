"""Command line: the parser, start-up, dispatch to a command and errors to exit codes."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from reconciler import commands
from reconciler.commands import EXIT_FAILED, EXIT_USAGE
from reconciler.errors import ReconcilerError, UsageError
from reconciler.settingsload import load_settings, quick_state_paths


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 64 (EX_USAGE) as the contract says."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help="settings file (default: $RECONCILER_CONFIG or /etc/reconciler/reconciler.toml)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=default,
        metavar="DIR",
        help="desired-state directory (setting state_dir)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=default,
        metavar="DIR",
        help="the gateway's install base (setting root)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="reconciler",
        description="Keeps a mail gateway's TLS files equal to a desired state: validated, "
        "atomic, verified, audited.",
    )
    _global_flags(parser, suppress=False)
    from reconciler.distribution import ShareDirAction, VersionAction

    parser.add_argument("--version", action=VersionAction, help="print the version and exit")
    parser.add_argument(
        "--print-share-dir",
        action=ShareDirAction,
        help="print where the shipped hooks/ and systemd/ (unit, examples) are, and exit",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help_text: str, *, json_flag: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _global_flags(sub, suppress=True)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    validate = command(
        "validate", "check the desired state only (exit 0 valid, 1 invalid); needs no ROOT"
    )
    validate.add_argument(
        "dirs",
        nargs="*",
        type=Path,
        metavar="DIR",
        help="desired-state directories (default STATE)",
    )
    validate.add_argument(
        "--no-secrets",
        action="store_true",
        help="do not read the private key (absent, or mounted at deploy); list what is skipped",
    )
    validate.add_argument(
        "--format",
        choices=("text", "json", "github", "gitlab"),
        default="text",
        help="text (default), json, github (workflow annotations), gitlab (Code Quality report)",
    )
    plan = command(
        "plan", "show what a pass would change (exit 0 none, 2 changes, 1 invalid)", json_flag=True
    )
    plan.add_argument(
        "--diff", action="store_true", help="add a unified diff of non-secret targets"
    )
    apply = command("apply", "one pass with hooks and verification (exit 0 converged, 1 failed)")
    apply.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for another reconciler's pass (default 60)",
    )
    command("run", "the daemon: watch the desired state and the targets, reconcile on change")
    command(
        "status",
        "last applied and attempted revisions, recent passes, drift, expiry",
        json_flag=True,
    )
    suspend = command("suspend", "pause applying (maintenance); validation and drift reports go on")
    suspend.add_argument("--reason", default=None, help="why, shown in status and the audit log")
    command("resume", "resume applying after `suspend`")
    audit = command("audit", "read or verify the audit log")
    audit_commands = audit.add_subparsers(
        dest="audit_command", metavar="SUBCOMMAND", parser_class=_Parser
    )
    audit_commands.required = True
    show = audit_commands.add_parser(
        "show", help="the audit log, readable", description="the audit log, readable"
    )
    _global_flags(show, suppress=True)
    show.add_argument("--since", help="ISO time (2026-11-27T10:00Z) or a duration (30m, 2h, 7d)")
    show.add_argument(
        "--kind", action="append", help="only records of this resource kind (repeatable)"
    )
    show.add_argument(
        "--event", action="append", help="only this event, e.g. change.applied (repeatable)"
    )
    show.add_argument("--revision", help="only records of this revision (a prefix is enough)")
    show.add_argument("--json", action="store_true", help="JSON Lines, as stored")
    verify = audit_commands.add_parser(
        "verify",
        help="check the hash chain; names the first bad record",
        description="check the hash chain; names the first bad record",
    )
    _global_flags(verify, suppress=True)
    command(
        "probe",
        "live TLS check of every TLS profile (exit 0 all trusted, 1 otherwise)",
        json_flag=True,
    )
    command("schema", "print the JSON Schema of gateway.toml and profile files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # reconciler uses no pydantic plugin; without this, pydantic scans every installed package's
    # metadata for one at the first model build (a visible part of every command's start-up).
    # An operator who wants plugins sets the variable themselves.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # Start-up builds a great many objects (cryptography's bindings, the settings' pydantic
    # models) and next to no garbage cycles: collecting meanwhile only slows it down.
    # Commands that go on to real work turn collection back on once settings are loaded.
    collecting = gc.isenabled()
    gc.disable()
    from reconciler.redact import ScrubbedStream

    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbedStream(sys.stdout), ScrubbedStream(sys.stderr)
    try:
        # Inside the try: a usage error or --help leaves by SystemExit, and the finally below
        # must still turn collection back on (main() is also called in-process, by tests).
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except ReconcilerError as exc:  # settings, lock, I/O: one line, no traceback
        print(f"reconciler: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `reconciler audit show | head`: the reader left; say nothing more, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        sys.stdout, sys.stderr = streams
        if collecting:
            gc.enable()


def _dispatch(args: argparse.Namespace) -> int:
    name = args.command
    if name == "schema":
        return commands.schema()
    if name == "validate":
        # `validate` reads two settings: without a settings file or another setting in force,
        # they are known without loading (and importing) the settings model.
        quick = quick_state_paths(args.config, args.state)
        if quick is not None:
            return commands.validate(*quick, args)
    settings = load_settings(args.config, state_dir=args.state, root=args.root)
    if name == "validate":
        return commands.validate(settings.state_dir, settings.key_dirs, args)
    gc.enable()  # passes, the daemon, logs and probes: garbage is collected as usual
    return commands.WITH_SETTINGS[name](settings, args)
