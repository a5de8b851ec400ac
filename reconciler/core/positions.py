"""Line and column of findings: TOML keys found by a light scan, PEM blocks by their BEGIN line.

tomllib reports no positions, so a TOML finding's dotted key is looked up in the text: table
headers (`[identity]`) set the current table, `key =` lines name keys in it (dotted keys and
quoted keys included). A key that is not in the file (a required one that is missing) is placed
at its table's header, or left without a line. A certificate finding that names "certificate N"
is placed on the BEGIN line of the file's Nth certificate block; other findings on a PEM file on
its first BEGIN line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from reconciler.core.desired import Finding
from reconciler.core.pem import CERT_LABELS
from reconciler.core.secret import is_key_label

_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_HEADER = re.compile(r"^(\s*)\[\[?\s*([^\[\]#]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(
    r"^(\s*)((?:[A-Za-z0-9_-]+|\"[^\"\n]*\"|'[^'\n]*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"\n]*\"|'[^'\n]*'))*)\s*="
)
_KEY_PART = re.compile(r"\s*(\"[^\"\n]*\"|'[^'\n]*'|[A-Za-z0-9_-]+)\s*(?:\.|$)")
_BEGIN = re.compile(r"^-----BEGIN ([A-Z0-9 .]+)-----", re.MULTILINE)
_CERT_NUMBER = re.compile(r"\bcertificate (\d+)\b")


def locate(findings: Iterable[Finding], sources: Mapping[str, bytes]) -> tuple[Finding, ...]:
    """`findings` with `line` and `col` filled in where `sources` (path -> bytes, never a
    private key) shows where they are; others unchanged."""
    texts: dict[str, str] = {}
    located: list[Finding] = []
    for finding in findings:
        data = sources.get(finding.file)
        if finding.line is not None or data is None:
            located.append(finding)
            continue
        text = texts.get(finding.file)
        if text is None:
            text = texts[finding.file] = data.decode("utf-8", "replace")
        where = position(finding, text)
        if where is None:
            located.append(finding)
        else:
            located.append(dataclasses.replace(finding, line=where[0], col=where[1]))
    return tuple(located)


def position(finding: Finding, text: str) -> tuple[int, int] | None:
    """(line, column), both 1-based, of `finding` in its file's `text`, or None."""
    if finding.file.endswith(".toml"):
        at = _TOML_AT.search(finding.reason)
        if at:
            return int(at.group(1)), int(at.group(2))
        if finding.field:
            return toml_key_position(text, finding.field)
        return None
    return pem_position(finding.reason, text)


def pem_position(reason: str, text: str) -> tuple[int, int] | None:
    """The BEGIN line of the certificate block `reason` names first, else of the first block."""
    blocks = [(m.group(1), text.count("\n", 0, m.start()) + 1) for m in _BEGIN.finditer(text)]
    if not blocks:
        return None
    certs = [line for label, line in blocks if label in CERT_LABELS]
    number = _CERT_NUMBER.search(reason)
    if number and 1 <= int(number.group(1)) <= len(certs):
        return certs[int(number.group(1)) - 1], 1
    if "private key block" in reason:
        keys = [line for label, line in blocks if is_key_label(label)]
        if keys:
            return keys[0], 1
    return blocks[0][1], 1


def _key_parts(dotted: str) -> list[str] | None:
    parts: list[str] = []
    pos = 0
    while pos < len(dotted):
        match = _KEY_PART.match(dotted, pos)
        if not match or match.end() == pos:
            return None
        part = match.group(1)
        parts.append(part[1:-1] if part[0] in "\"'" else part)
        pos = match.end()
    return parts


def toml_key_position(text: str, dotted: str) -> tuple[int, int] | None:
    """Where the key `dotted` (e.g. `identity.cert`) is set in `text`; for a key that is not
    there, its nearest table or parent key; None when nothing of it is there."""
    wanted = dotted.split(".")
    best: tuple[int, tuple[int, int]] | None = None
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _key_parts(header.group(2)) or []
            found = table
            col = len(header.group(1)) + 1
        else:
            key = _KEY.match(line)
            if not key:
                continue
            found = table + (_key_parts(key.group(2)) or [])
            col = len(key.group(1)) + 1
        if found == wanted:
            return number, col
        depth = len(found)
        if depth and found == wanted[:depth] and (best is None or depth > best[0]):
            best = (depth, (number, col))
    return best[1] if best else None
