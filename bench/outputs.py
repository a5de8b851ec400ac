"""What the fuzz harness checks of every output: it parses, it cannot command, it shows no secret.

Outputs are anything that leaves a reconciler process: a command's stdout and stderr, the audit
log, the daemon's log, the bodies of /metrics, /healthz and /readyz. The properties:

* a JSON output (`validate --format json|gitlab`, `plan --json`, `status --json`, `probe --json`,
  each line of `audit show --json`) parses;
* no output holds a character a terminal acts on (C0 controls other than newline and tab, DEL,
  the C1 controls) nor a byte sequence that is not UTF-8;
* no line holds ``##[`` or ``##vso[`` (a CI runner's commands), and no line that is not one of
  the `github` format's own ``::`` commands starts with ``::``;
* no form of any key or credential the state used (`bench.leaks`) appears anywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from bench.leaks import Forms, first_leak

_TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CI_COMMAND = re.compile(r"##\[|##vso\[")
_GITHUB_COMMAND = re.compile(r"::(error|warning|notice) [^:\n]*::.*")


class OutputBrokenError(AssertionError):
    """An output broke one of the properties: says which, where, and shows the spot."""


@dataclass(frozen=True, slots=True)
class Output:
    """One output: where it came from, its bytes, and whether it is JSON (whole, or per line)."""

    where: str
    data: bytes
    json: str | None = None
    """"document": the whole output is one JSON document; "lines": each line is one."""
    github: bool = False
    """The `github` format: its own `::` command lines are allowed."""


def check(output: Output, secrets: list[Forms]) -> None:
    """Every property for `output`; OutputBrokenError naming the first one broken."""
    try:
        text = output.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _broken(output, "is not UTF-8", exc.start) from None
    found = _TERMINAL_CONTROL.search(text)
    if found is not None:
        raise _broken(output, f"holds the control character {found.group()!r}", found.start())
    for number, line in enumerate(text.splitlines(), start=1):
        command = _CI_COMMAND.search(line)
        if command is not None:
            raise OutputBrokenError(f"{output.where}: line {number} holds {command.group()!r}")
        if line.lstrip().startswith("::") and not (
            output.github and _GITHUB_COMMAND.fullmatch(line)
        ):
            raise OutputBrokenError(f"{output.where}: line {number} starts a runner command")
    leak = first_leak(output.data, secrets)
    if leak is not None:
        raise OutputBrokenError(f"{output.where}: shows {leak}")
    if output.json == "document":
        _parses(output, text)
    elif output.json == "lines":
        for line in text.splitlines():
            _parses(output, line)


def _parses(output: Output, text: str) -> None:
    try:
        json.loads(text)
    except ValueError as exc:
        raise OutputBrokenError(f"{output.where}: JSON that does not parse: {exc}") from None


def _broken(output: Output, what: str, at: int) -> OutputBrokenError:
    around = output.data[max(0, at - 40) : at + 40]
    return OutputBrokenError(f"{output.where}: {what} at byte {at}: {around!r}")
