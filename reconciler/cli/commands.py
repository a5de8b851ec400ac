"""The commands' bodies: each takes its settings and arguments, prints, returns its exit code.

Everything printed goes through the output boundary field by field (`reconciler.support.redact`):
a JSON document is scrubbed before it is serialised, a text view scrubs each value it shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.config import Settings
    from reconciler.core.desired import Finding
    from reconciler.reconcile import PassResult, Recorder

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64


def _print_findings(findings: Sequence[Finding]) -> None:
    from reconciler.support.redact import scrub_line

    for finding in findings:
        print(scrub_line(str(finding)), file=sys.stderr)


def _print_json(
    document: object,
    *,
    indent: int | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
) -> None:
    """`document` as JSON on stdout, every text in it scrubbed before it is serialised."""
    from reconciler.support.redact import scrub_document

    shown = scrub_document(document)
    print(json.dumps(shown, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii))


def validate(state_dir: Path, key_dirs: tuple[Path, ...], args: argparse.Namespace) -> int:
    from reconciler.cli import findings

    dirs = [Path.cwd() / d for d in args.dirs] or [state_dir]
    reports = findings.validate_states(dirs, key_dirs, no_secrets=args.no_secrets)
    findings.write(reports, args.format)
    return findings.exit_code(reports)


#: The JSON Schema dialect `schema gateway|profile` declares: the newest that editors' TOML
#: tooling (taplo, Even Better TOML) reads.
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def schema(which: str | None = None) -> int:
    """One JSON Schema document (`gateway`, `profile`), or both keyed by file name."""
    from reconciler.core.desired import GatewayFile, ProfileFile, json_schema

    models = {"gateway": GatewayFile, "profile": ProfileFile}
    if which is not None:
        print(json.dumps({"$schema": SCHEMA_DIALECT, **json_schema(models[which])}, indent=2))
        return EXIT_OK
    both = {
        "gateway.toml": json_schema(GatewayFile),
        "profiles/NAME.toml": json_schema(ProfileFile),
    }
    print(json.dumps(both, indent=2, sort_keys=True))
    return EXIT_OK


def _plan(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.cli.planview import format_plan, plan_to_json
    from reconciler.reconcile import make_plan

    planned = make_plan(settings)
    if planned.blocked is not None:
        from reconciler.support.redact import scrub_line

        if args.json:
            _print_json({"revision": planned.revision, "valid": True, "blocked": planned.blocked})
        print(f"reconciler: {scrub_line(planned.blocked)}", file=sys.stderr)
        return EXIT_FAILED
    if planned.plan is None:
        if args.json:
            invalid = {
                "revision": planned.revision,
                "valid": False,
                "errors": [str(f) for f in planned.evaluation.errors],
            }
            _print_json(invalid, indent=2)
        _print_findings(planned.evaluation.findings)
        return EXIT_FAILED
    diffs = None
    if args.diff:
        from reconciler.cli import plandiff

        diffs = plandiff.plan_diffs(planned.plan)
    if args.summary:
        from reconciler.cli.planview import format_plan_summary, plan_summary_json

        _print_findings(() if args.json else planned.evaluation.warnings)
        summary = plan_summary_json(planned) if args.json else None
        print(json.dumps(summary, indent=2) if summary else format_plan_summary(planned))
    elif args.json:
        document = plan_to_json(planned)
        if diffs is not None:
            for change, (_, diff) in zip(document["changes"], diffs, strict=True):
                change["diff"] = diff
        _print_json(document, indent=2)
    else:
        _print_findings(planned.evaluation.warnings)
        print(format_plan(planned))
        if diffs:
            print(plandiff.format_diffs(diffs))
    return EXIT_OK if planned.plan.empty and not planned.dir_modes else EXIT_CHANGES


# -- apply / run -----------------------------------------------------------------------------


def _recorder(settings: Settings) -> Recorder:
    from reconciler.audit import AuditLog
    from reconciler.reconcile import Recorder
    from reconciler.support.logging import configure_logging

    configure_logging(settings.log_format)
    return Recorder(AuditLog(settings.audit_path))


def _close_recorder(settings: Settings, recorder: Recorder) -> None:
    """Publish the audit log's head when this command appended records, then close the log.

    The witness runs here, bounded by its timeout; its failure is logged, never this command's.
    """
    from reconciler.audit import HeadPublisher

    try:
        audit = recorder.audit
        head = audit.head if audit is not None and audit.appended else None
        if head is not None:
            witness = settings.audit
            HeadPublisher(witness.witness, witness.witness_timeout_s).publish(head)
    finally:
        recorder.close()


def _apply(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.reconcile import Hints, PassMemory, Tools, reconcile
    from reconciler.support.logging import chosen_format, get_logger
    from reconciler.txn import RootLock

    lock = RootLock(settings.var_dir)
    recorder = _recorder(settings)
    progress = None
    if chosen_format() == "console" and sys.stderr.isatty() and not args.json:
        # A person at a terminal: the step the pass is in, then a summary by kind instead of a
        # log line per changed file (the audit log and JSON logs keep one record each).
        from reconciler.cli.progress import TerminalProgress

        progress = TerminalProgress()
        recorder.progress, recorder.summarize_changes = progress, True
    tools = Tools(recorder)
    try:
        with lock.held(args.lock_timeout):
            hints = Hints(undisturbed=lock.undisturbed)
            result, _ = reconcile(settings, PassMemory(), hints, tools)
    finally:
        if progress is not None:
            progress.close()
        _close_recorder(settings, tools.recorder)
    code, summary = _apply_summary(result)
    if progress is not None:
        from reconciler.cli.applyview import changed, format_by_kind

        if changed(result):
            lines = [f"{summary} in {progress.elapsed_s:.1f} s", *format_by_kind(result)]
            summary = "\n".join(lines)
    if args.json:
        from reconciler.cli.applyview import result_to_json

        print(json.dumps(result_to_json(result), indent=2))
    if args.detailed_exitcode:
        from reconciler.cli.applyview import detailed_exit_code

        code = detailed_exit_code(result, code)
    if chosen_format() == "json":
        # JSON logs: the findings are already in the log (one record each); the summary is one
        # more record, so that every line on stdout and stderr stays one JSON object.
        get_logger("reconciler.apply").log(
            "info" if code == EXIT_OK else "error",
            "apply.finished",
            outcome=str(result.outcome),
            revision=result.revision,
            summary=summary,
        )
        return code
    if args.json:  # stdout holds the one result object; the findings are in it
        return code
    from reconciler.support.redact import scrub

    _print_findings(result.findings)
    # Several lines (the summary by kind): each character a terminal acts on is escaped.
    print(scrub(summary), file=sys.stdout if code != EXIT_FAILED else sys.stderr)
    return code


def _apply_summary(result: PassResult) -> tuple[int, str]:
    """The exit code of an `apply` and its one line for a person."""
    from reconciler.core.outcome import Outcome
    from reconciler.core.wording import counted

    outcome = result.outcome
    if outcome is Outcome.NO_CHANGE:
        return EXIT_OK, f"revision {result.revision}: already converged; nothing changed"
    if outcome is Outcome.CONVERGED:
        assert result.plan is not None
        applied = counted(len(result.plan.changes), "change")
        return EXIT_OK, f"revision {result.revision}: applied {applied}"
    if outcome is Outcome.SUSPENDED:
        pending = len(result.plan.changes) if result.plan else 0
        return EXIT_FAILED, (
            f"revision {result.revision}: suspended; {counted(pending, 'change')} pending, "
            "nothing applied (reconciler resume)"
        )
    if outcome is Outcome.DEFERRED:
        return EXIT_FAILED, (
            "the desired state kept changing while being read; nothing was applied, try again"
        )
    if outcome is Outcome.REJECTED:
        return EXIT_FAILED, "desired state rejected; nothing was applied, the targets are unchanged"
    return EXIT_FAILED, (
        f"revision {result.revision}: failed: {result.reason}; the previous state is back in place"
    )


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.daemon import run_daemon

    return run_daemon(settings, config=args.config, state=args.state, root=args.root)


# -- status / suspend / resume ----------------------------------------------------------------


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.cli.status import collect_status, format_status
    from reconciler.support.redact import scrub_document

    status = collect_status(settings)
    if args.json:
        _print_json(status, indent=2, sort_keys=True)
    else:
        shown = scrub_document(status, one_line=True)
        assert isinstance(shown, dict)
        print(format_status(shown))
    exit_code: int = status["check"]["exit_code"]
    return exit_code


def _suspend(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.txn import records

    records.suspend(settings.var_dir, args.reason)
    from reconciler.reconcile import Notice

    details = {"suspended": True, "suspend_reason": args.reason}
    recorder = _recorder(settings)
    try:
        recorder.record(Notice(revision=None, reason="applying suspended", details=details))
    finally:
        _close_recorder(settings, recorder)
    print(
        "suspended: passes validate and report drift but change nothing until `reconciler resume`"
    )
    return EXIT_OK


def _resume(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.txn import records

    if records.resume(settings.var_dir):
        from reconciler.reconcile import Notice

        resumed = Notice(revision=None, reason="applying resumed", details={"suspended": False})
        recorder = _recorder(settings)
        try:
            recorder.record(resumed)
        finally:
            _close_recorder(settings, recorder)
        print("resumed: the next pass applies the desired state")
    else:
        print("not suspended; nothing to do")
    return EXIT_OK


# -- audit / probe ----------------------------------------------------------------------------


def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from reconciler.audit import audit_files
    from reconciler.cli import auditview
    from reconciler.support.redact import scrub_line

    files = audit_files(settings.audit_path)
    if args.audit_command == "verify":
        intact, line = auditview.verify_retained(files)
        print(scrub_line(line), file=sys.stdout if intact else sys.stderr)
        if args.witness:
            matches, lines = auditview.verify_witnessed(files, args.witness)
            shown = "\n".join(scrub_line(line) for line in lines)
            print(shown, file=sys.stdout if matches else sys.stderr)
            intact = intact and matches
        return EXIT_OK if intact else EXIT_FAILED
    if args.audit_command == "head":
        from reconciler.audit import read_head

        head = read_head(settings.audit_path)
        if head is None:
            print(f"audit log {settings.audit_path}: no record yet", file=sys.stderr)
        else:
            print(head.line(), end="")
        return EXIT_OK
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
        # What the file holds, field by field through the boundary: a record written by us
        # is shown unchanged, one someone edited cannot reach the terminal raw.
        for record in selected:
            _print_json(record, sort_keys=True, ensure_ascii=False)
    else:
        print(auditview.format_records(list(selected)))
    return EXIT_OK


def _probe(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from reconciler.cli import probereport
    from reconciler.core.evaluate import evaluate
    from reconciler.probe import probe_profiles
    from reconciler.source import read_snapshot

    evaluation = evaluate(read_snapshot(settings.state_dir, settings.key_dirs), datetime.now(UTC))
    if evaluation.desired is None:
        _print_findings(evaluation.errors)
        return EXIT_FAILED
    trust_pem = b"".join(entry.pem for entry in evaluation.desired.trust)
    results = probe_profiles(evaluation.desired.profiles, trust_pem)
    if args.json:
        _print_json(probereport.results_to_json(results), indent=2)
    else:
        print(probereport.format_results(results))
    return probereport.exit_code(results)


#: Every command that needs the settings loaded, by name.
WITH_SETTINGS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "plan": _plan,
    "apply": _apply,
    "run": _run,
    "status": _status,
    "suspend": _suspend,
    "resume": _resume,
    "audit": _audit,
    "probe": _probe,
}
