"""`plan --diff`: a unified diff per change, certificates as fields and key material as digests.

Each side of a change is turned into readable lines first: a PEM file of certificates into one
group of lines per certificate (subject, issuer, serial, expiry, SHA-256 fingerprint), text files
(ssl.conf, the JSON files) into their lines, and anything holding private key material (the key,
tls.pem, a file someone put a key into) into its SHA-256 only, never read back for secret targets.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Sequence

from reconciler.cli.findings import clean
from reconciler.core.certificates import cert_info
from reconciler.core.pem import CERT_LABELS, PemError, parse_pem
from reconciler.core.plan import Change, Plan
from reconciler.core.secret import KEY_MARKER

_READ_LIMIT = 1024 * 1024 + 1
_KEY_MARKER_BYTES = KEY_MARKER.encode("ascii")


def change_diff(change: Change, before: bytes | None) -> str:
    """The unified diff of one change; `before` is the current file (None: absent or secret)."""
    if _secret(change):
        old = _digest_view(change.before_sha256)
        new = _digest_view(change.after_sha256)
    else:
        old = view(before) if before is not None else _digest_view(change.before_sha256)
        new = view(change.target.content if change.target is not None else None)
    lines = difflib.unified_diff(
        old, new, fromfile=f"a{change.path}", tofile=f"b{change.path}", lineterm=""
    )
    text = "\n".join(clean(line) for line in lines)
    if not text and change.action == "update":
        return f"--- a{change.path}\n+++ b{change.path}\n(content unchanged: mode or group only)"
    return text


def _digest_view(sha256: str | None) -> list[str]:
    return [] if sha256 is None else [f"sha256 {sha256} (key material: content not shown)"]


def view(content: bytes | None) -> list[str]:
    """The lines a side of a diff shows for `content` (None: the file does not exist)."""
    if content is None:
        return []
    if _KEY_MARKER_BYTES in content.upper():
        return _digest_view(hashlib.sha256(content).hexdigest())
    if b"-----BEGIN" in content:
        certs = _cert_lines(content)
        if certs is not None:
            return certs
    try:
        return content.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return [f"sha256 {hashlib.sha256(content).hexdigest()} (binary content)"]


def _cert_lines(content: bytes) -> list[str] | None:
    try:
        blocks = parse_pem(content)
    except PemError:
        return None
    if not blocks or any(b.label not in CERT_LABELS for b in blocks):
        return None
    lines: list[str] = []
    for block in blocks:
        try:
            info = cert_info(block.der)
        except ValueError:
            lines.append(f"unreadable certificate, sha256 {hashlib.sha256(block.der).hexdigest()}")
            continue
        fields = info.fields()
        lines += [
            f"subject {fields['subject']}",
            f"  issuer {fields['issuer']}",
            f"  serial {fields['serial']}",
            f"  not after {fields['not_after']}",
            f"  sha256 fingerprint {fields['sha256_fingerprint']}",
        ]
    return lines


def read_current(path: str) -> bytes | None:
    """The file now at a target path, or None when absent or unreadable (no link followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, _READ_LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)


def plan_diffs(plan: Plan) -> list[tuple[Change, str]]:
    """Every change of `plan` with its diff; secret targets' current files are never read."""
    return [(change, change_diff(change, _before(change))) for change in plan.changes]


def _secret(change: Change) -> bool:
    """A secret target, or an identity file being deleted (which may hold the key)."""
    return change.target.secret if change.target is not None else change.kind == "identity"


def _before(change: Change) -> bytes | None:
    if change.before_sha256 is None or _secret(change):
        return None
    current = read_current(change.path)
    if current is None or hashlib.sha256(current).hexdigest() != change.before_sha256:
        return None  # changed since it was observed: show the observed digest instead
    return current


def format_diffs(diffs: Sequence[tuple[Change, str]]) -> str:
    return "\n".join(text for _, text in diffs if text)
