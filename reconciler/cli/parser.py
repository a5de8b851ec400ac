"""The command line's grammar: every command, flag and help text, and usage errors exiting 64."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from reconciler.cli.commands import EXIT_USAGE


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
    shown = plan.add_mutually_exclusive_group()
    shown.add_argument(
        "--diff", action="store_true", help="add a unified diff of non-secret targets"
    )
    shown.add_argument(
        "--summary", action="store_true", help="count the changes by kind instead of listing them"
    )
    apply = command(
        "apply",
        "one pass with hooks and verification (exit 0 converged, 1 failed)",
        json_flag=True,
    )
    apply.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 2 when the pass changed something (0: nothing to change, 1: failed)",
    )
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
        "last applied and attempted revisions, recent passes, drift, expiry (exit 0 converged, "
        "2 changes pending, 3 rejected, 4 failed, 5 not serving)",
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
        "--kind",
        action="append",
        type=audit_kind,
        help="only records of this resource kind (repeatable)",
    )
    show.add_argument(
        "--event",
        action="append",
        type=audit_event,
        help="only this event, e.g. change.applied, or a family: pass (repeatable)",
    )
    show.add_argument("--revision", help="only records of this revision (a prefix is enough)")
    show.add_argument("--json", action="store_true", help="JSON Lines, as stored")
    verify = audit_commands.add_parser(
        "verify",
        help="check the hash chain; names the first bad record",
        description="check the hash chain; names the first bad record",
    )
    _global_flags(verify, suppress=True)
    verify.add_argument(
        "--witness",
        action="append",
        metavar="FILE",
        help="also check the log against heads published earlier: SEQ HASH lines, # comments, "
        "any order (- reads standard input; repeatable)",
    )
    head = audit_commands.add_parser(
        "head",
        help="SEQ HASH of the last record",
        description="print SEQ HASH of the audit log's last record (what a witness receives)",
    )
    _global_flags(head, suppress=True)
    command(
        "probe",
        "live TLS check of every TLS profile (exit 0 all trusted, 1 otherwise)",
        json_flag=True,
    )
    schema = command(
        "schema", "print the JSON Schema of gateway.toml or profile files (editors, CI)"
    )
    schema.add_argument(
        "file",
        nargs="?",
        choices=("gateway", "profile"),
        help="gateway (gateway.toml) or profile (profiles/NAME.toml); both, keyed, without",
    )
    return parser


def audit_kind(text: str) -> str:
    """`audit show --kind`: one of the resource kinds, or a usage error naming them."""
    from reconciler.core.desired import KINDS

    if text not in KINDS:
        raise argparse.ArgumentTypeError(f"unknown kind {text!r} (one of {', '.join(KINDS)})")
    return text


def audit_event(text: str) -> str:
    """`audit show --event`: an event name, or a family (`pass`, `pass.*`), else a usage error."""
    from reconciler.audit import EVENTS

    family = text.removesuffix(".*")
    if text in EVENTS or any(event.startswith(f"{family}.") for event in EVENTS):
        return text
    raise argparse.ArgumentTypeError(f"unknown event {text!r} (one of {', '.join(EVENTS)})")


class VersionAction(argparse.Action):
    """`--version`: print "reconciler VERSION" and exit 0 (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from reconciler.version import version

        print(f"reconciler {version()}")
        parser.exit(0)


class ShareDirAction(argparse.Action):
    """`--print-share-dir`: print the directory holding hooks/ and systemd/, exit 0 (1 if none)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from reconciler.version import share_dir

        found = share_dir()
        if found is None:
            print("reconciler: no shipped hooks/ and systemd/ found", file=sys.stderr)
            parser.exit(1)
        print(found)
        parser.exit(0)
