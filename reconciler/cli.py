"""Command line: commands -> application functions; exit codes; output formatting."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from reconciler.errors import ReconcilerError, UsageError

if TYPE_CHECKING:
    from reconciler.app import Planned
    from reconciler.core.desired import Finding
    from reconciler.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64


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
    import os

    # reconciler uses no pydantic plugin; without this, pydantic scans every installed package's
    # metadata for one at the first model build (a visible part of every command's start-up).
    # An operator who wants plugins sets the variable themselves.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # Start-up builds hundreds of thousands of objects (cryptography's bindings, the settings'
    # pydantic models) and next to no garbage cycles: collecting meanwhile only slows it down.
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
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        sys.stdout, sys.stderr = streams
        if collecting:
            gc.enable()


def _settings(args: argparse.Namespace) -> Settings:
    from reconciler.settings import load_settings

    return load_settings(args.config, state_dir=args.state, root=args.root)


# `validate` reads two settings. Importing pydantic-settings to learn them is a large part of
# its start-up, so where no settings file and no other RECONCILER_* variable is in
# force (a GitOps repository's CI), they are resolved here by the same precedence: flag >
# environment > default (with no file, there is no file level).
# Anything else (a settings file, another variable, a value only pydantic would know how to read)
# goes through load_settings, which also reports a bad setting. tests/test_settings.py pins this
# to load_settings across flags, variables and files.
QUICK_VARIABLES = frozenset({"RECONCILER_CONFIG", "RECONCILER_STATE_DIR", "RECONCILER_KEY_DIRS"})
DEFAULT_CONFIG = Path("/etc/reconciler/reconciler.toml")
DEFAULT_STATE_DIR = Path("/etc/reconciler/desired-state")


def quick_state_paths(
    config: Path | None, state: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[Path, tuple[Path, ...]] | None:
    """(state_dir, key_dirs) exactly as load_settings would give them, or None: load them."""
    env = os.environ if environ is None else environ
    if config is not None or env.get("RECONCILER_CONFIG") or DEFAULT_CONFIG.is_file():
        return None
    # pydantic-settings matches variable names case-insensitively: any other spelling, or any
    # other setting, is left to it.
    if any(n.upper().startswith("RECONCILER_") and n not in QUICK_VARIABLES for n in env):
        return None
    state_dir = state
    if state_dir is None:
        from_env = env.get("RECONCILER_STATE_DIR")
        state_dir = DEFAULT_STATE_DIR if from_env is None else Path(from_env)
    key_dirs: tuple[Path, ...] = ()
    listed = env.get("RECONCILER_KEY_DIRS")
    if listed is not None:
        try:
            value = json.loads(listed)  # a list setting comes from the environment as JSON
        except ValueError:
            return None
        if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
            return None
        key_dirs = tuple(Path(d) for d in value)
    cwd = Path.cwd()
    return cwd / state_dir, tuple(cwd / d for d in key_dirs)


def _dispatch(args: argparse.Namespace) -> int:
    name = args.command
    if name == "schema":
        return _schema()
    if name == "validate":
        quick = quick_state_paths(args.config, args.state)
        if quick is not None:
            return _validate(*quick, args)
    settings = _settings(args)
    if name == "validate":
        return _validate(settings.state_dir, settings.key_dirs, args)
    gc.enable()  # passes, the daemon, logs and probes: garbage is collected as usual
    handlers = {
        "plan": _plan,
        "apply": _apply,
        "run": _run,
        "status": _status,
        "suspend": _suspend,
        "resume": _resume,
        "audit": _audit,
        "probe": _probe,
    }
    return handlers[name](settings, args)


# -- validate / plan / schema ---------------------------------------------------------------------


def _print_findings(findings: Sequence[Finding]) -> None:
    from reconciler.redact import scrub

    for finding in findings:
        print(scrub(str(finding)), file=sys.stderr)


def _validate(state_dir: Path, key_dirs: tuple[Path, ...], args: argparse.Namespace) -> int:
    from reconciler import findings

    dirs = [Path.cwd() / d for d in args.dirs] or [state_dir]
    reports = findings.validate_states(dirs, key_dirs, no_secrets=args.no_secrets)
    findings.write(reports, args.format)
    return findings.exit_code(reports)


def _schema() -> int:
    from reconciler.core.desired import GatewayFile, ProfileFile, json_schema

    schema = {
        "gateway.toml": json_schema(GatewayFile),
        "profiles/NAME.toml": json_schema(ProfileFile),
    }
    print(json.dumps(schema, indent=2, sort_keys=True))
    return EXIT_OK


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "(absent)"


def plan_to_json(planned: Planned) -> dict[str, Any]:
    assert planned.plan is not None
    return {
        "revision": planned.plan.revision,
        "changes": [
            {
                "kind": c.kind,
                "path": c.path,
                "action": c.action,
                "cause": c.cause,
                "before_sha256": c.before_sha256,
                "after_sha256": c.after_sha256,
                "mode": f"{c.mode:04o}" if c.mode is not None else None,
                "certificates": [
                    {
                        "subject": i.subject,
                        "issuer": i.issuer,
                        "serial": i.serial,
                        "not_after": i.not_after.isoformat(),
                        "sha256_fingerprint": i.sha256_fingerprint,
                    }
                    for i in c.certs
                ],
            }
            for c in planned.plan.changes
        ],
        "warnings": [str(w) for w in planned.evaluation.warnings],
    }


def format_plan(planned: Planned) -> str:
    assert planned.plan is not None
    current = planned.plan
    if current.empty:
        return f"revision {current.revision}: no changes; the targets match the desired state"
    lines = [f"revision {current.revision}: {len(current.changes)} change(s)"]
    width = max(len(c.path) for c in current.changes)
    for c in current.changes:
        cause = "  (drift: changed by someone else)" if c.cause == "drift" else ""
        lines.append(
            f"  {c.kind:<12} {c.action:<6} {c.path:<{width}}  "
            f"{_short(c.before_sha256)} -> {_short(c.after_sha256)}{cause}"
        )
        if c.certs:
            leaf = c.certs[0]
            more = f" (+{len(c.certs) - 1} more)" if len(c.certs) > 1 else ""
            expires = f"{leaf.not_after:%Y-%m-%d}"
            lines.append(f"  {'':<12} {'':<6} subject {leaf.subject}, expires {expires}{more}")
    return "\n".join(lines)


def _plan(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.app import make_plan

    planned = make_plan(settings)
    if planned.plan is None:
        if args.json:
            print(
                json.dumps(
                    {
                        "revision": planned.revision,
                        "valid": False,
                        "errors": [str(f) for f in planned.evaluation.errors],
                    },
                    indent=2,
                )
            )
        _print_findings(planned.evaluation.findings)
        return EXIT_FAILED
    diffs = None
    if args.diff:
        from reconciler import plandiff

        diffs = plandiff.plan_diffs(planned.plan)
    if args.json:
        document = plan_to_json(planned)
        if diffs is not None:
            for change, (_, diff) in zip(document["changes"], diffs, strict=True):
                change["diff"] = diff
        print(json.dumps(document, indent=2))
    else:
        _print_findings(planned.evaluation.warnings)
        print(format_plan(planned))
        if diffs:
            print(plandiff.format_diffs(diffs))
    return EXIT_OK if planned.plan.empty else EXIT_CHANGES


# -- apply / run -----------------------------------------------------------------------------


def _recorder(settings: Settings) -> Any:
    from reconciler.audit import AuditLog
    from reconciler.logging import Recorder, configure_logging

    configure_logging(settings.log_format)
    return Recorder(AuditLog(settings.audit_path))


def _apply(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.app import Reconciler

    reconciler = Reconciler(settings, _recorder(settings))
    result = reconciler.apply_once(args.lock_timeout)
    _print_findings(result.findings)
    if result.outcome == "no-change":
        print(f"revision {result.revision}: already converged; nothing changed")
        return EXIT_OK
    if result.outcome == "converged":
        assert result.plan is not None
        print(f"revision {result.revision}: applied {len(result.plan.changes)} change(s)")
        return EXIT_OK
    if result.outcome == "suspended":
        pending = len(result.plan.changes) if result.plan else 0
        print(
            f"revision {result.revision}: suspended; {pending} change(s) pending, "
            "nothing applied (reconciler resume)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if result.outcome == "deferred":
        print(
            "the desired state kept changing while being read; nothing was applied, try again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if result.outcome == "rejected":
        print(
            "desired state rejected; nothing was applied, the targets are unchanged",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(
        f"revision {result.revision}: failed: {result.reason}; the previous state is back in place",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.daemon import run_daemon

    return run_daemon(settings, config=args.config, state=args.state, root=args.root)


# -- status / suspend / resume ----------------------------------------------------------------


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.status import collect_status, format_status

    status = collect_status(settings)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return EXIT_OK


def _suspend(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler import records

    records.suspend(settings.var_dir, args.reason)
    _recorder(settings).record(
        "warning", None, reason="applying suspended", suspended=True, suspend_reason=args.reason
    )
    print(
        "suspended: passes validate and report drift but change nothing until `reconciler resume`"
    )
    return EXIT_OK


def _resume(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler import records

    if records.resume(settings.var_dir):
        _recorder(settings).record("warning", None, reason="applying resumed", suspended=False)
        print("resumed: the next pass applies the desired state")
    else:
        print("not suspended; nothing to do")
    return EXIT_OK


# -- audit / probe ----------------------------------------------------------------------------


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler import audit, auditview

    files = audit.audit_files(settings.audit_path)
    if args.audit_command == "verify":
        intact, line = auditview.verify_retained(files)
        print(line, file=sys.stdout if intact else sys.stderr)
        return EXIT_OK if intact else EXIT_FAILED
    from datetime import UTC, datetime

    try:
        since = auditview.parse_since(args.since, datetime.now(UTC)) if args.since else None
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from exc
    selected = auditview.read_records(
        files,
        since=since,
        kinds=set(args.kind) if args.kind else None,
        events=set(args.event) if args.event else None,
        revision=args.revision,
    )
    if args.json:
        for record in selected:
            print(json.dumps(record, sort_keys=True, ensure_ascii=False))
    else:
        print(auditview.format_records(list(selected)))
    return EXIT_OK


def _probe(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from reconciler import probe, probereport
    from reconciler.core.load import evaluate
    from reconciler.snapshot import read_snapshot

    evaluation = evaluate(read_snapshot(settings.state_dir, settings.key_dirs), datetime.now(UTC))
    if evaluation.desired is None:
        _print_findings(evaluation.errors)
        return EXIT_FAILED
    trust_pem = b"".join(entry.pem for entry in evaluation.desired.trust)
    results = probe.probe_profiles(evaluation.desired.profiles, trust_pem)
    if args.json:
        print(json.dumps(probereport.results_to_json(results), indent=2))
    else:
        print(probereport.format_results(results))
    return probereport.exit_code(results)
