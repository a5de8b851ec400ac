"""The one boundary for text leaving the process: escapes odd characters, redacts key material.

Every output path (audit records, the operational log, command output in text and JSON, status,
hook output tails, metric labels) passes its text through `scrub`. It never raises and is
deterministic, so an audit record built from scrubbed text hashes the same when verified.

What `scrub` does, in order:

1. Characters that cannot be written as UTF-8 (lone surrogates, as `os.fsdecode` makes of a file
   name's undecodable bytes) become ``\\xNN`` (the original byte) or ``\\uNNNN``; control
   characters other than newline and tab become ``\\xNN``. The result always encodes.
2. PEM private-key blocks in any letter case (also cut off at either end) become `REDACTED`.
3. Every value the process was told about is cut out wherever it appears:

   - `remember_key`: for each private key in the bytes, its PEM body lines and its DER as one
     base64 string (any run of 16+ base64 characters inside it, however it is wrapped), the
     base64 of the whole PEM file (as ``base64 key.pem`` prints it), and its private numbers in
     hex, plain or colon-separated as ``openssl pkey -text`` prints them (any run of 8+ bytes).
   - `remember_secret`: an opaque credential's text, stripped of surrounding whitespace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TextIO

from reconciler.core.secret import KEY_MARKER

__all__ = ["REDACTED", "forget_all", "remember_key", "remember_secret", "scrub", "scrub_secrets"]

REDACTED: Final = "[private key redacted]"
SECRET_REDACTED: Final = "[secret redacted]"  # noqa: S105 - a placeholder, not a password

_MAX_REMEMBERED: Final = 64
"""Values kept (newest win): a daemon re-reads the same key every pass, and a rotated one
replaces it; a bound keeps a long-lived process from growing."""

_KEY_MARKER_BYTES: Final = KEY_MARKER.encode("ascii")
_MIN_B64_RUN: Final = 16
_MIN_HEX_BYTES: Final = 8

_PEM_BLOCK: Final = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    r"|\A(?:(?!-----BEGIN ).)*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    re.DOTALL | re.IGNORECASE,
)
_PEM_BLOCK_BYTES: Final = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----(.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----",
    re.DOTALL | re.IGNORECASE,
)
# Lookbehinds: a run is tried only where it starts, not at each of its characters.
_B64_RUN: Final = re.compile(rf"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{{{_MIN_B64_RUN},}}={{0,2}}")
# Colon-separated hex may wrap (``openssl pkey -text``: "...:\n    ab:cd"); plain hex may not.
_HEX_RUN: Final = re.compile(
    rf"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{{2}}:(?:[ \t]*\r?\n[ \t]*)?){{{_MIN_HEX_BYTES - 1},}}"
    rf"[0-9A-Fa-f]{{2}}|(?<![0-9A-Fa-f])[0-9A-Fa-f]{{{2 * _MIN_HEX_BYTES},}}"
)
_ODD: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
_HEX_SEPARATORS: Final = re.compile(r"[:\s]")

_lock = threading.Lock()
_b64: OrderedDict[str, None] = OrderedDict()
"""Base64 texts of remembered keys (DER and whole-file), unwrapped."""
_hex: OrderedDict[str, None] = OrderedDict()
"""Lower-case hex of remembered private numbers (with and without a leading 00)."""
_secrets: OrderedDict[str, None] = OrderedDict()
_seen: OrderedDict[bytes, None] = OrderedDict()
"""sha256 of key files already remembered: a daemon re-reads the same key every pass."""


@dataclass(frozen=True, slots=True)
class _View:
    """What `scrub` looks for, rebuilt whenever a value is remembered (rarely) so that each
    call (often) reads one reference, takes no lock and looks runs up in sets."""

    b64_grams: frozenset[str] = frozenset()
    hex_grams: frozenset[str] = frozenset()
    secrets: tuple[str, ...] = ()


_view = _View()


def _grams(items: Iterable[str], size: int) -> frozenset[str]:
    return frozenset(item[i : i + size] for item in items for i in range(len(item) - size + 1))


def _rebuild() -> None:
    """Call with _lock held."""
    global _view  # noqa: PLW0603 - one immutable view, swapped whole
    _view = _View(
        _grams(_b64, _MIN_B64_RUN),
        _grams(_hex, 2 * _MIN_HEX_BYTES),
        tuple(sorted(_secrets, key=len, reverse=True)),
    )


def _add(store: OrderedDict[str, None], value: str) -> None:
    store[value] = None
    store.move_to_end(value)
    while len(store) > _MAX_REMEMBERED:
        store.popitem(last=False)


def remember_key(pem: bytes) -> None:
    """Scrub from all later output every private key found in `pem` (one or more PEM blocks,
    anywhere in the bytes: a key file, or a manifest holding one inline). Never raises."""
    try:
        _remember_key(pem)
    except Exception:  # redaction must never stop the caller
        return


def _remember_key(pem: bytes) -> None:
    if _KEY_MARKER_BYTES not in pem.upper():
        return
    digest = hashlib.sha256(pem).digest()
    with _lock:
        if digest in _seen:
            return
    whole = base64.b64encode(pem).decode("ascii")
    found_b64: list[str] = [whole]
    found_hex: list[str] = []
    for match in _PEM_BLOCK_BYTES.finditer(pem):
        body = re.sub(rb"\\n|[^A-Za-z0-9+/=]", b"", match.group(2))
        text_body = body.decode("ascii", "replace")
        if text_body:
            found_b64.append(text_body.rstrip("="))
        try:
            der = base64.b64decode(body + b"=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            continue
        found_hex.extend(_private_numbers(match.group(1).decode("ascii").upper(), der))
    with _lock:
        for item in found_b64:
            if len(item) >= _MIN_B64_RUN:
                _add(_b64, item)
        for item in found_hex:
            if len(item) >= 2 * _MIN_HEX_BYTES:
                _add(_hex, item)
                _add(_hex, "00" + item)
        _seen[digest] = None
        while len(_seen) > _MAX_REMEMBERED:
            _seen.popitem(last=False)
        _rebuild()


def _private_numbers(label: str, der: bytes) -> list[str]:
    """Hex of a DER private key's secret numbers (RSA d, p, q, dp, dq, qinv; EC/EdDSA scalar)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x448, x25519

    from reconciler.core.key_algorithm import dsa_private_value

    # A DSA key is read without cryptography, which deprecates DSA (and warns on loading one).
    x = dsa_private_value(label, der)
    if x is not None:
        return _hex_numbers([x])
    try:
        key = serialization.load_der_private_key(der, password=None)
    except Exception:  # an unreadable key still has its base64 remembered
        return []
    numbers: list[int] = []
    raw: list[bytes] = []
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        numbers = [n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp]
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = [key.private_numbers().private_value]
    elif isinstance(
        key,
        ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | x25519.X25519PrivateKey
        | x448.X448PrivateKey,
    ):
        raw = [
            key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        ]
    return _hex_numbers(numbers) + [item.hex() for item in raw]


def _hex_numbers(numbers: list[int]) -> list[str]:
    out = [format(value, "x") for value in numbers if value > 0]
    return [("0" + item) if len(item) % 2 else item for item in out]


def remember_secret(value: bytes) -> None:
    """Scrub from all later output the text of an opaque credential (surrounding whitespace
    stripped). Never raises."""
    try:
        text = value.strip().decode("utf-8", "surrogateescape")
    except Exception:  # redaction must never stop the caller
        return
    if text:
        with _lock:
            _add(_secrets, _escape(text))
            if _escape(text) != text:
                _add(_secrets, text)
            _rebuild()


def forget_all() -> None:
    """Drop every remembered value (tests, and a process that re-executes)."""
    with _lock:
        _b64.clear()
        _hex.clear()
        _secrets.clear()
        _seen.clear()
        _rebuild()


def _escape_char(match: re.Match[str]) -> str:
    point = ord(match.group())
    if 0xDC80 <= point <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it
        return f"\\x{point - 0xDC00:02x}"
    if point > 0xFF:
        return f"\\u{point:04x}"
    return f"\\x{point:02x}"


def _escape(text: str) -> str:
    return _ODD.sub(_escape_char, text)


def scrub(text: str) -> str:
    """`text` fit to leave the process: encodable, odd characters escaped, key material and
    remembered secrets redacted. Deterministic for a given set of remembered values; never
    raises (anything unexpected gives a placeholder rather than the text)."""
    try:
        return _scrub(text)
    except Exception:  # the boundary itself must never fail
        return "[text withheld: could not be checked for secrets]"


def scrub_secrets(text: str) -> str:
    """`scrub` escaping only what cannot be encoded: for text already rendered for a terminal
    (colours kept), whose values went through `scrub` before."""
    try:
        return _scrub(text, escape=False)
    except Exception:  # the boundary itself must never fail
        return "[text withheld: could not be checked for secrets]"


def _scrub(text: str, *, escape: bool = True) -> str:
    if not isinstance(text, str):
        text = str(text)
    text = _escape(text) if escape else _SURROGATE.sub(_escape_char, text)
    if KEY_MARKER in text.upper():
        text = _PEM_BLOCK.sub(REDACTED, text)
    view = _view
    for secret in view.secrets:
        if secret in text:
            text = text.replace(secret, SECRET_REDACTED)
    if view.b64_grams:
        text = _B64_RUN.sub(lambda m: _b64_sub(m, view.b64_grams), text)
    if view.hex_grams:
        text = _HEX_RUN.sub(lambda m: _hex_sub(m, view.hex_grams), text)
    return text


def _known(run: str, grams: frozenset[str], size: int) -> bool:
    """Whether any `size`-character piece of `run` is a piece of a remembered value."""
    return any(run[i : i + size] in grams for i in range(len(run) - size + 1))


def _b64_sub(match: re.Match[str], grams: frozenset[str]) -> str:
    run = match.group().rstrip("=")
    return REDACTED if _known(run, grams, _MIN_B64_RUN) else match.group()


def _hex_sub(match: re.Match[str], grams: frozenset[str]) -> str:
    run = _HEX_SEPARATORS.sub("", match.group()).lower()
    return REDACTED if _known(run, grams, 2 * _MIN_HEX_BYTES) else match.group()


class ScrubbedStream:
    """A text stream (stdout, stderr) whose every write goes through `scrub_secrets`: what a
    command prints can never carry a remembered key or secret, nor fail to encode."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(scrub_secrets(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
