"""PEM blocks on bytes, for validation: split a file into labelled DER blocks and re-emit them.

Parsing is lax where editors and tools differ harmlessly (CRLF, trailing blanks, text between
blocks such as "Bag Attributes" or comments) and strict where a difference would change the
meaning (a BEGIN without its END, bad base64). Errors never quote the block's content: a key's
bytes must not reach a message.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

__all__ = ["CERT_LABELS", "PemBlock", "PemError", "encode_pem", "parse_pem"]

# RFC 7468 names CERTIFICATE; the two legacy spellings are accepted and re-emitted canonically.
CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "X.509 CERTIFICATE"})

# Labels are printable ASCII without "-" (RFC 7468 section 3); anything else after "-----BEGIN"
# is left as ordinary text, which then shows up as "no CERTIFICATE block" to the operator.
_BEGIN = re.compile(rb"-----BEGIN ([\x20-\x2c\x2e-\x7e]{1,64})-----")
_LINE_WIDTH = 64


class PemError(ValueError):
    """The data has a PEM block that cannot be read; the message names the line, never content."""


@dataclass(frozen=True, slots=True)
class PemBlock:
    """One `-----BEGIN LABEL-----` block: its label, RFC 1421 headers and decoded body."""

    label: str
    headers: tuple[tuple[str, str], ...]
    der: bytes
    line: int
    """1-based line number of the BEGIN line, for messages."""

    def __repr__(self) -> str:
        # The body may be a private key: keep it out of reprs, tracebacks and logs.
        return f"PemBlock(label={self.label!r}, line={self.line}, der=<{len(self.der)} bytes>)"


def parse_pem(data: bytes) -> list[PemBlock]:
    """All PEM blocks in `data`, in file order; text outside blocks is ignored.

    Raises PemError for a BEGIN line without its matching END line or an undecodable body.
    """
    blocks: list[PemBlock] = []
    pos = 0
    while True:
        begin = _BEGIN.search(data, pos)
        if begin is None:
            return blocks
        label = begin.group(1)
        line = data.count(b"\n", 0, begin.start()) + 1
        shown = label.decode("ascii")
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, begin.end())
        nested = data.find(b"-----BEGIN ", begin.end())
        if end < 0 or 0 <= nested < end:
            raise PemError(f"line {line}: BEGIN {shown} has no matching END {shown} line")
        headers, der = _decode_body(data[begin.end() : end], line, shown)
        blocks.append(PemBlock(shown, headers, der, line))
        pos = end + len(end_marker)


def encode_pem(label: str, der: bytes) -> bytes:
    """The canonical form: base64 wrapped at 64 columns, "\\n" line endings, final newline."""
    body = binascii.b2a_base64(der, newline=False)
    lines = [body[i : i + _LINE_WIDTH] for i in range(0, len(body), _LINE_WIDTH)]
    head = b"-----BEGIN " + label.encode("ascii") + b"-----\n"
    tail = b"-----END " + label.encode("ascii") + b"-----\n"
    return head + b"".join(chunk + b"\n" for chunk in lines) + tail


def _decode_body(body: bytes, line: int, label: str) -> tuple[tuple[tuple[str, str], ...], bytes]:
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    for raw in body.splitlines():
        text = raw.strip()
        if not text:
            continue
        if b":" in text:
            # RFC 1421 headers (Proc-Type, DEK-Info) come before the base64; base64 has no ":".
            if chunks:
                raise PemError(f"line {line}: BEGIN {label} has a header line inside its base64")
            name, _, value = text.partition(b":")
            headers.append(
                (
                    name.strip().decode("ascii", "replace"),
                    value.strip().decode("ascii", "replace"),
                )
            )
            continue
        chunks.append(text)
    if not chunks:
        raise PemError(f"line {line}: BEGIN {label} block is empty")
    try:
        der = binascii.a2b_base64(b"".join(chunks), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        # The exception text may quote characters of the body; say only where and what.
        raise PemError(f"line {line}: BEGIN {label} block is not valid base64") from exc
    if not der:
        raise PemError(f"line {line}: BEGIN {label} block is empty")
    return tuple(headers), der
