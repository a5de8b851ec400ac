"""The one boundary for text leaving the process: escapes odd characters, redacts key material.

Every output passes through it field by field, before it is serialised: audit records (values
and field names), the operational log, command output in text, JSON and the CI formats, the HTTP
bodies (/readyz, /metrics labels), systemd's STATUS=, hook output tails and what a remote server
said to `probe`. Never a serialised stream: redacting a document after it was written could cut
it apart (an unterminated PEM marker would swallow the rest of a JSON document).

What `scrub` does, in order:

1. Characters that cannot be written as UTF-8 (lone surrogates, as `os.fsdecode` makes of a file
   name's undecodable bytes) become ``\\xNN`` (the original byte) or ``\\uNNNN``; control
   characters other than newline and tab become ``\\xNN``. The result always encodes.
2. PEM private-key blocks in any letter case (also cut off at either end) become `REDACTED`.
3. Every value remembered (`reconciler.support.remembered`: the keys and credentials in use, and
   the newest others) is cut out wherever it appears, in any form it remembers.
4. ``##[`` (GitHub's legacy workflow command syntax, which its runner reads anywhere in a line
   that is not a ``::`` command) becomes ``#\\x23[``, and ``##vso[`` (Azure Pipelines' logging
   commands, read anywhere in a line too) becomes ``#\\x23vso[``: no CI runner reads a value
   as a command, whatever format shows it.

`scrub` returns a `Clean` text, and returns a `Clean` text it is given as it is: a record's
fields are scrubbed once however many outputs show them. Text the reconciler made itself from
its own data (a digest it computed, a path it rendered) is marked with `made`: escaped, never
searched for secrets. `scrub_line` is `scrub` for a field shown on one line (newline and tab
escaped too). `scrub` never raises and is deterministic for a given set of remembered values, so
an audit record built from scrubbed text hashes the same when verified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from reconciler.core.secret import KEY_MARKER
from reconciler.support.remembered import (
    MIN_B64_RUN,
    MIN_HEX_BYTES,
    current,
    escape,
    forget_all,
    in_use,
    remember_key,
    remember_secret,
)

__all__ = [
    "REDACTED",
    "SECRET_REDACTED",
    "Clean",
    "forget_all",
    "in_use",
    "made",
    "remember_key",
    "remember_secret",
    "scrub",
    "scrub_document",
    "scrub_line",
    "scrub_output",
]

REDACTED: Final = "[private key redacted]"
SECRET_REDACTED: Final = "[secret redacted]"  # noqa: S105 - a placeholder, not a password
_SECRET_REDACTED_BYTES: Final = SECRET_REDACTED.encode("ascii")
_WITHHELD: Final = "[text withheld: could not be checked for secrets]"

_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    r"|\A(?:(?!-----BEGIN ).)*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    re.DOTALL | re.IGNORECASE,
)
# Lookbehinds: a run is tried only where it starts, not at each of its characters.
_B64_RUN: Final = re.compile(rf"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{{{MIN_B64_RUN},}}={{0,2}}")
# Colon-separated hex may wrap (``openssl pkey -text``: "...:\n    ab:cd"); plain hex may not.
_HEX_RUN: Final = re.compile(
    rf"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{{2}}:(?:[ \t]*\r?\n[ \t]*)?){{{MIN_HEX_BYTES - 1},}}"
    rf"[0-9A-Fa-f]{{2}}|(?<![0-9A-Fa-f])[0-9A-Fa-f]{{{2 * MIN_HEX_BYTES},}}"
)
_HEX_SEPARATORS: Final = re.compile(r"[:\s]")
_CI_COMMANDS: Final = re.compile(r"##(?=\[|vso\[)")
"""GitHub's legacy ``##[command]`` and Azure's ``##vso[command]``: a runner reads them anywhere."""
_CI_COMMAND_ESCAPED: Final = "#\\x23"


class Clean(str):
    """Text that went through the boundary: `scrub` gives it back unchanged."""

    __slots__ = ()


def scrub(text: object) -> Clean:
    """`text` fit to leave the process: encodable, odd characters escaped, key material and
    remembered secrets redacted, GitHub's ``##[`` neutralised. Deterministic for a given set of
    remembered values; never raises (anything unexpected gives a placeholder, not the text)."""
    if isinstance(text, Clean):
        return text
    try:
        return Clean(_scrub(text if isinstance(text, str) else str(text)))
    except Exception:  # the boundary itself must never fail
        return Clean(_WITHHELD)


def scrub_line(text: object) -> Clean:
    """`scrub` for a field shown on one line: newline and tab are escaped as well."""
    cleaned = scrub(text)
    if "\n" in cleaned or "\t" in cleaned:
        return Clean(cleaned.replace("\n", "\\x0a").replace("\t", "\\x09"))
    return cleaned


def made(text: str) -> Clean:
    """Text the reconciler made from its own data (a digest, a path it rendered, a word of its
    own): escaped like any other, but never searched for secrets it cannot hold. Anything that
    is not text goes the whole way (`scrub`)."""
    if isinstance(text, Clean) or not isinstance(text, str):
        return scrub(text)
    return Clean(_neutralise(escape(text)))


def scrub_document(value: object, *, one_line: bool = False) -> object:
    """A JSON-like document (mappings, lists, text, numbers) with every text scrubbed, keys
    included (`one_line`: as `scrub_line`, for a view that prints the fields on lines of its
    own). Anything else becomes its scrubbed text. Serialise the result, never the reverse."""
    clean = scrub_line if one_line else scrub

    def walk(item: object) -> object:
        if isinstance(item, str):
            return clean(item)
        if item is None or isinstance(item, bool | int | float):
            return item
        if isinstance(item, Mapping):
            return {clean(str(key)): walk(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple | set | frozenset):
            return [walk(inner) for inner in item]
        return clean(str(item))

    return walk(value)


def scrub_output(data: bytes) -> Clean:
    """What a process wrote, as text fit to leave: remembered credentials are cut out of the
    bytes first (so one that is not UTF-8 is found too), then the text is scrubbed. Undecodable
    bytes are written ``\\xNN``."""
    try:
        raw = current().raw
        if raw is not None:
            data = raw.sub(_SECRET_REDACTED_BYTES, data)
        return scrub(data.decode("utf-8", "surrogateescape"))
    except Exception:  # the boundary itself must never fail
        return Clean(_WITHHELD)


def _neutralise(text: str) -> str:
    return _CI_COMMANDS.sub(lambda _: _CI_COMMAND_ESCAPED, text) if "##" in text else text


def _scrub(text: str) -> str:
    text = escape(text)
    if "-----" in text and KEY_MARKER in text.upper():
        text = _PEM_BLOCK.sub(REDACTED, text)
    matcher = current()
    if matcher.text is not None:
        text = matcher.text.sub(SECRET_REDACTED, text)
    if matcher.b64_grams and len(text) >= MIN_B64_RUN:
        grams = matcher.b64_grams
        text = _B64_RUN.sub(lambda m: _b64_sub(m, grams), text)
    if matcher.hex_grams and len(text) >= 2 * MIN_HEX_BYTES:
        grams = matcher.hex_grams
        text = _HEX_RUN.sub(lambda m: _hex_sub(m, grams), text)
    return _neutralise(text)


def _known(run: str, grams: frozenset[str], size: int) -> bool:
    """Whether any `size`-character piece of `run` is a piece of a remembered value."""
    return any(run[i : i + size] in grams for i in range(len(run) - size + 1))


def _b64_sub(match: re.Match[str], grams: frozenset[str]) -> str:
    run = match.group().rstrip("=")
    return REDACTED if _known(run, grams, MIN_B64_RUN) else match.group()


def _hex_sub(match: re.Match[str], grams: frozenset[str]) -> str:
    run = _HEX_SEPARATORS.sub("", match.group()).lower()
    return REDACTED if _known(run, grams, 2 * MIN_HEX_BYTES) else match.group()
