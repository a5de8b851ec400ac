"""What the output boundary redacts by value: the keys and credentials the process was told about.

Two ways in:

* **in use** (`in_use(owner, keys=..., secrets=...)`): every value one owner uses now (the desired
  state read from one directory, a pass's backups of secret targets). Each call replaces what that
  owner pinned before. Pinned values stay however many other values the process sees.
* **in passing** (`remember_key`, `remember_secret`): key text read anywhere else (a key pasted
  into a profile as comment lines, a manifest with a key inline). The newest `RECENT_LIMIT` stay;
  values an owner stops using join them.

What is remembered of each value (its forms):

* a key: its DER as one base64 text, the base64 of the whole file (as ``base64 key.pem`` prints
  it), and its private numbers in hex (with and without a leading 00). Any run of
  `MIN_B64_RUN` base64 characters or `MIN_HEX_BYTES` bytes of hex inside them is recognised.
* a credential: its bytes (surrounding whitespace stripped), and its text as the boundary escapes
  it.

`current()` is the matcher for everything remembered now: one immutable value, rebuilt when the
set changes (rarely) and read without a lock by every scrub (often). Its credential matchers are
compiled once per change: one regular expression for all credentials, not one search per value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from reconciler.core.secret import KEY_MARKER

__all__ = [
    "MIN_B64_RUN",
    "MIN_HEX_BYTES",
    "RECENT_LIMIT",
    "Matcher",
    "current",
    "escape",
    "forget_all",
    "in_use",
    "remember_key",
    "remember_secret",
]

RECENT_LIMIT: Final = 32
"""Values remembered in passing (or no longer in use) that are kept, newest first."""
MIN_B64_RUN: Final = 16
MIN_HEX_BYTES: Final = 8

_KEY_MARKER_BYTES: Final = KEY_MARKER.encode("ascii")
_PEM_BLOCK_BYTES: Final = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----(.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----",
    re.DOTALL | re.IGNORECASE,
)
_ODD: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    point = ord(match.group())
    if 0xDC80 <= point <= 0xDCFF:  # an undecodable byte, as os.fsdecode keeps it
        return f"\\x{point - 0xDC00:02x}"
    if point > 0xFF:
        return f"\\u{point:04x}"
    return f"\\x{point:02x}"


def escape(text: str) -> str:
    """`text` with every character a terminal acts on (other than newline and tab) and every
    character UTF-8 cannot hold written as ``\\xNN`` (the original byte) or ``\\uNNNN``.
    Character by character, so the escaped text of a value is found in the escaped text of
    anything that holds it."""
    if text.isascii() and text.isprintable():
        return text
    return _ODD.sub(_escape_char, text)


@dataclass(frozen=True, slots=True)
class _Forms:
    """What is looked for of one remembered value."""

    b64_grams: frozenset[str] = frozenset()
    hex_grams: frozenset[str] = frozenset()
    text: str | None = None
    """A credential's escaped text."""
    raw: bytes | None = None
    """A credential's bytes."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """Everything remembered now, ready to match: gram sets for the keys' forms, one compiled
    pattern for the credentials' texts and one for their bytes."""

    b64_grams: frozenset[str] = frozenset()
    hex_grams: frozenset[str] = frozenset()
    text: re.Pattern[str] | None = None
    raw: re.Pattern[bytes] | None = None


_lock = threading.Lock()
_forms: dict[str, _Forms] = {}
"""sha256 of a value -> its forms, for every value pinned or recent."""
_pins: dict[str, frozenset[str]] = {}
_recent: OrderedDict[str, None] = OrderedDict()
_matcher = Matcher()


def current() -> Matcher:
    """The matcher for what is remembered now."""
    return _matcher


def remember_key(pem: bytes) -> None:
    """Remember in passing every private key in `pem` (one or more PEM blocks anywhere in the
    bytes: a key file, or a manifest holding one inline). Never raises."""
    try:
        if _KEY_MARKER_BYTES not in pem.upper():
            return
        digest = _digest(b"key", pem)
        forms = _forms.get(digest) or _key_forms(pem)
        with _lock:
            _change(lambda: _keep_recent({digest: forms}))
    except Exception:  # redaction must never stop the caller
        return


def remember_secret(value: bytes) -> None:
    """Remember in passing an opaque credential (surrounding whitespace stripped). Never raises."""
    try:
        found = _secret_forms(value)
        if found is not None:
            with _lock:
                _change(lambda: _keep_recent(dict([found])))
    except Exception:  # redaction must never stop the caller
        return


def in_use(owner: str, *, keys: Iterable[bytes] = (), secrets: Iterable[bytes] = ()) -> None:
    """Pin exactly these values for `owner`, in place of what it pinned before: they stay
    remembered however many others the process sees, until the owner stops using them (they
    then join the values remembered in passing). Never raises."""
    try:
        wanted: dict[str, _Forms] = {}
        for pem in keys:
            if _KEY_MARKER_BYTES in pem.upper():
                digest = _digest(b"key", pem)
                wanted[digest] = _forms.get(digest) or _key_forms(pem)
        for value in secrets:
            found = _secret_forms(value)
            if found is not None:
                wanted[found[0]] = found[1]
        with _lock:
            before = _pins.get(owner, frozenset())
            if before != frozenset(wanted):
                _change(lambda: _pin(owner, before, wanted))
    except Exception:  # redaction must never stop the caller
        return


def forget_all() -> None:
    """Drop every remembered value (tests, and a process that re-executes)."""
    global _matcher  # noqa: PLW0603 - one immutable matcher, swapped whole
    with _lock:
        _forms.clear()
        _pins.clear()
        _recent.clear()
        _matcher = Matcher()


def _digest(kind: bytes, value: bytes) -> str:
    return hashlib.sha256(kind + b"\0" + value).hexdigest()


def _change(step: Callable[[], None]) -> None:
    """Call with _lock held: run `step`, and rebuild the matcher when the values it leaves
    remembered differ from those before (a value seen again changes nothing)."""
    before = set(_forms)
    step()
    if set(_forms) != before:
        _rebuild()


def _pin(owner: str, before: frozenset[str], wanted: dict[str, _Forms]) -> None:
    _pins[owner] = frozenset(wanted)
    _forms.update(wanted)
    for digest in wanted:
        _recent.pop(digest, None)
    # What the owner no longer uses is remembered in passing from now on.
    _keep_recent({d: _forms[d] for d in before - wanted.keys() if d in _forms})


def _keep_recent(values: dict[str, _Forms]) -> None:
    """Add `values` as the newest remembered in passing (a pinned one stays pinned), and drop
    the oldest beyond the limit."""
    pinned = frozenset().union(*_pins.values())
    for digest, forms in values.items():
        if digest in pinned:
            continue
        _forms[digest] = forms
        _recent[digest] = None
        _recent.move_to_end(digest)
    while len(_recent) > RECENT_LIMIT:
        oldest, _ = _recent.popitem(last=False)
        _forms.pop(oldest, None)


def _rebuild() -> None:
    """Call with _lock held."""
    global _matcher  # noqa: PLW0603 - one immutable matcher, swapped whole
    forms = list(_forms.values())
    texts = sorted({f.text for f in forms if f.text})
    raws = sorted({f.raw for f in forms if f.raw})
    _matcher = Matcher(
        frozenset().union(*(f.b64_grams for f in forms)),
        frozenset().union(*(f.hex_grams for f in forms)),
        _literal_pattern(texts),
        _bytes_pattern(raws),
    )


def _grams(items: Iterable[str], size: int) -> frozenset[str]:
    return frozenset(item[i : i + size] for item in items for i in range(len(item) - size + 1))


def _key_forms(pem: bytes) -> _Forms:
    """The base64 and hex forms of every private key block in `pem`."""
    found_b64 = [base64.b64encode(pem).decode("ascii")]
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
        for number in _private_numbers(match.group(1).decode("ascii").upper(), der):
            found_hex += [number, "00" + number]
    return _Forms(
        _grams([b for b in found_b64 if len(b) >= MIN_B64_RUN], MIN_B64_RUN),
        _grams([h for h in found_hex if len(h) >= 2 * MIN_HEX_BYTES], 2 * MIN_HEX_BYTES),
    )


def _secret_forms(value: bytes) -> tuple[str, _Forms] | None:
    raw = value.strip()
    if not raw:
        return None
    text = escape(raw.decode("utf-8", "surrogateescape"))
    return _digest(b"secret", raw), _Forms(text=text, raw=raw)


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


# -- one pattern for many literal values --------------------------------------------------------


def _literal_pattern(words: list[str]) -> re.Pattern[str] | None:
    """One pattern matching any of `words`, longest first where several start at one place.

    Built as a trie (common prefixes shared), so matching costs about the same for thousands of
    values as for one; a set the trie cannot express within the regular expression engine's
    limits falls back to a plain alternation, longest first."""
    if not words:
        return None
    try:
        return re.compile(_trie_regex(words))
    except (RecursionError, re.error, OverflowError):
        ordered = sorted(words, key=len, reverse=True)
        return re.compile("|".join(re.escape(word) for word in ordered))


def _bytes_pattern(values: list[bytes]) -> re.Pattern[bytes] | None:
    """`_literal_pattern` over bytes (each byte a latin-1 character)."""
    text = _literal_pattern([value.decode("latin-1") for value in values])
    return None if text is None else re.compile(text.pattern.encode("latin-1"))


_END = ""
_Trie: TypeAlias = "dict[str, _Trie]"


def _trie_regex(words: Iterable[str]) -> str:
    root: _Trie = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[_END] = {}
    return _emit(root)


def _emit(node: _Trie) -> str:
    """The regular expression of a trie node: its branches, optional where a word ends here."""
    branches = []
    for first in sorted(k for k in node if k != _END):
        text, child = re.escape(first), node[first]
        while len(child) == 1 and _END not in child:  # a chain without branches: one literal
            ((char, child),) = child.items()
            text += re.escape(char)
        branches.append(text + (_emit(child) if set(child) != {_END} else ""))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if _END in node:
        body = ("(?:" + body + ")" if len(branches) == 1 else body) + "?"
    return body
