"""`validate` over one or more states: findings located, and printed as text, JSON or CI formats.

Formats: `text` (people), `json` (scripts), `github` (workflow annotation commands, placed on the
file and line by GitHub), `gitlab` (a Code Quality report, shown in merge requests). Every value
goes through the output boundary on its own before it is placed in a line or a document: private
keys and secrets redacted, control characters escaped (newlines too: a finding is one line), and
GitHub's legacy ``##[`` commands neutralised, in every format a CI runner reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from reconciler.core.collect import error
from reconciler.core.desired import Finding
from reconciler.core.evaluate import Evaluation, StateInput, evaluate
from reconciler.core.positions import locate
from reconciler.core.wording import counted
from reconciler.source import gateways_of, read_snapshot
from reconciler.support.redact import scrub_document, scrub_line

FORMATS = ("text", "json", "github", "gitlab")


@dataclass(frozen=True, slots=True)
class StateReport:
    """One desired-state directory's verdict, its findings with positions."""

    state_dir: Path
    evaluation: Evaluation
    findings: tuple[Finding, ...]
    revision: str

    @property
    def valid(self) -> bool:
        return self.evaluation.desired is not None

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == "warning")


def validate_states(
    state_dirs: Sequence[Path],
    key_dirs: Sequence[Path] = (),
    *,
    no_secrets: bool = False,
    now: datetime | None = None,
) -> list[StateReport]:
    """Read and evaluate each state directory, in order; nothing is written anywhere."""
    moment = now or datetime.now(UTC)
    reports = []
    for state_dir in state_dirs:
        if gateways_of(state_dir) == []:
            reason = "a fleet repository with no gateways/NAME directory"
            finding = error("fleet.toml", None, reason, rule="state-unusable")
            empty = Evaluation(None, (finding,))
            reports.append(StateReport(state_dir, empty, (finding,), "unknown"))
    for state_dir in _expand_fleets(state_dirs):
        inp = read_snapshot(state_dir, key_dirs, no_secrets=no_secrets)
        evaluation = evaluate(inp, moment)
        findings = locate(evaluation.findings, _public_sources(inp))
        reports.append(StateReport(state_dir, evaluation, findings, inp.revision))
    return reports


def _expand_fleets(state_dirs: Sequence[Path]) -> list[Path]:
    """Each directory, with a fleet repository's root replaced by every gateway's STATE in it."""
    expanded: list[Path] = []
    for state_dir in state_dirs:
        members = gateways_of(state_dir)
        expanded.extend([state_dir] if members is None else members)
    return expanded


def _public_sources(inp: StateInput) -> dict[str, bytes]:
    """path -> bytes of every file read that is not the key (positions are looked up in them):
    as written, where what was evaluated differs (a fleet gateway's composed gateway.toml)."""
    sources: dict[str, bytes] = {}
    files = [inp.gateway, inp.cert, *(s for _, s in inp.trust), *(s for _, s in inp.profiles)]
    for source in [*files, *inp.originals]:
        if source is not None and source.data is not None:
            sources[source.path] = source.data
    return sources


def exit_code(reports: Sequence[StateReport]) -> int:
    return 0 if all(r.valid for r in reports) else 1


def clean(text: str) -> str:
    """Text as outputs may show it (the output boundary's rules), on one line: a finding is one
    annotation or one line of text, so newlines are escaped too."""
    return scrub_line(text)


def display_path(report: StateReport, finding: Finding, cwd: Path | None = None) -> str:
    """The finding's file relative to the working directory (where CI systems place it)."""
    base = cwd or Path.cwd()
    path = Path(finding.file)
    if not path.is_absolute():
        path = report.state_dir / path
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


def _summary(report: StateReport) -> str:
    desired = report.evaluation.desired
    skipped = report.evaluation.skipped
    if desired is None:
        count = report.errors
        return (
            f"{report.state_dir}: invalid ({count} error{'s' * (count != 1)}); "
            "nothing would be applied"
        )
    identity = "an identity" if desired.identity else "no identity"
    if desired.identity is None and desired.gateway.identity is not None and skipped:
        identity = "an identity (checked without its key)"
    return (
        f"{report.state_dir}: valid, revision {desired.revision}: {identity}, "
        f"{counted(len(desired.trust), 'trust entry')}, "
        f"{counted(len(desired.profiles), 'profile')}, {counted(report.warnings, 'warning')}"
    )


def _total(reports: Sequence[StateReport]) -> str:
    valid = sum(1 for r in reports if r.valid)
    errors = sum(r.errors for r in reports)
    warnings = sum(r.warnings for r in reports)
    return (
        f"{len(reports)} states: {valid} valid, {len(reports) - valid} invalid; "
        f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


def _skipped_lines(report: StateReport) -> list[str]:
    return [
        f"skipped (--no-secrets): {s.field} ({clean(s.path)}) not read; "
        f"rules not checked: {', '.join(s.rules)}"
        for s in report.evaluation.skipped
    ]


def _message(finding: Finding) -> str:
    where = f"{finding.field}: " if finding.field else ""
    return clean(f"{where}{finding.reason}")


def write_text(reports: Sequence[StateReport], out: TextIO, err: TextIO) -> None:
    """Findings on `err`, one a line; the skipped checks and the summary on `out` (a valid
    state) or `err` (an invalid one), as `validate` always printed them."""
    several = len(reports) > 1
    for report in reports:
        for f in report.findings:
            shown = display_path(report, f) if several else f.file
            at = f":{f.line}" if f.line is not None else ""
            rule = f" [{f.rule}]" if f.rule else ""
            print(f"{f.severity}: {clean(shown)}{at}: {_message(f)}{rule}", file=err)
        for line in _skipped_lines(report):
            print(line, file=out)
        print(clean(_summary(report)), file=out if report.valid else err)
    if several:
        print(clean(_total(reports)), file=out if exit_code(reports) == 0 else err)


def to_json(reports: Sequence[StateReport]) -> dict[str, object]:
    return {
        "valid": exit_code(reports) == 0,
        "errors": sum(r.errors for r in reports),
        "warnings": sum(r.warnings for r in reports),
        "states": [
            {
                "state": str(r.state_dir),
                "valid": r.valid,
                "revision": r.revision,
                "summary": clean(_summary(r)),
                "findings": [
                    {
                        "severity": f.severity,
                        "rule": f.rule,
                        "file": clean(f.file),
                        "path": clean(display_path(r, f)),
                        "line": f.line,
                        "col": f.col,
                        "field": f.field,
                        "message": clean(f.reason),
                    }
                    for f in r.findings
                ],
                "skipped": [
                    {"field": s.field, "path": clean(s.path), "rules": list(s.rules)}
                    for s in r.evaluation.skipped
                ],
            }
            for r in reports
        ],
    }


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _plain(line: str) -> str:
    """A line that is not a command, as the runner must not read it: one that would start with
    ``::`` has its first colon escaped (``##[`` is neutralised by the boundary already)."""
    stripped = line.lstrip()
    if stripped.startswith("::"):
        return line[: len(line) - len(stripped)] + "\\x3a" + stripped[1:]
    return line


def github_lines(reports: Sequence[StateReport]) -> list[str]:
    """GitHub Actions workflow commands: `::error file=F,line=L,col=C,title=RULE::message`; every
    other line is plain text the runner reads as no command."""
    lines = []
    for report in reports:
        for f in report.findings:
            props = [f"file={_escape_property(clean(display_path(report, f)))}"]
            if f.line is not None:
                props.append(f"line={f.line}")
            if f.col is not None:
                props.append(f"col={f.col}")
            props.append(f"title={_escape_property(f.rule or 'reconciler')}")
            lines.append(f"::{f.severity} {','.join(props)}::{_escape_data(_message(f))}")
        lines += [
            f"::notice title=no-secrets::{_escape_data(line)}" for line in _skipped_lines(report)
        ]
        lines.append(_plain(clean(_summary(report))))
    if len(reports) > 1:
        lines.append(_plain(clean(_total(reports))))
    return lines


def gitlab_report(
    reports: Sequence[StateReport], cwd: Path | None = None
) -> list[dict[str, object]]:
    """A GitLab Code Quality report (`artifacts: reports: codequality`).

    GitLab tells new issues from fixed ones by their fingerprint, so it is made of what names
    the problem, never of its message (which may say "in 19 days"): the rule, the file, the
    field and the gateway (the state directory, relative to the working directory: two gateways
    sharing a layer's file have one issue each), and, for the same four again, how many came
    before it in the report.
    """
    issues: list[dict[str, object]] = []
    seen: dict[tuple[str, ...], int] = {}
    base = cwd or Path.cwd()
    for report in reports:
        gateway = os.path.relpath(report.state_dir, base)
        for f in report.findings:
            path = clean(display_path(report, f, base))
            key = (f.rule or "reconciler", path, f.field or "", gateway)
            occurrence = seen[key] = seen.get(key, -1) + 1
            identity = "\0".join([*key, str(occurrence)]).encode("utf-8", "surrogateescape")
            issues.append(
                {
                    "description": _message(f),
                    "check_name": f.rule or "reconciler",
                    "fingerprint": hashlib.sha256(identity).hexdigest(),
                    "severity": "major" if f.severity == "error" else "minor",
                    "location": {"path": path, "lines": {"begin": f.line or 1}},
                }
            )
    return issues


def write(reports: Sequence[StateReport], fmt: str, out: TextIO | None = None) -> None:
    """Print `reports` in format `fmt` (one of FORMATS) on `out` (default stdout)."""
    out = out or sys.stdout
    if fmt == "text":
        write_text(reports, out, sys.stderr)
    elif fmt == "json":
        print(json.dumps(scrub_document(to_json(reports)), indent=2), file=out)
    elif fmt == "github":
        print("\n".join(github_lines(reports)), file=out)
    else:
        print(json.dumps(scrub_document(gitlab_report(reports)), indent=2), file=out)
        for report in reports:
            print(clean(_summary(report)), file=sys.stderr)
