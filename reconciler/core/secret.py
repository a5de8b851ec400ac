"""Private key material: an opaque carrier that never shows the key, and the tests for key text."""

from __future__ import annotations

import hashlib

KEY_MARKER = "PRIVATE KEY-----"
"""What every PEM private-key label ends with: the one test for key text, in any letter case
(compare with `text.upper()`)."""


def is_key_label(label: str) -> bool:
    """True for a PEM block label naming a private key (`PRIVATE KEY`, `RSA PRIVATE KEY`, ...)."""
    return f"{label}-----".endswith(KEY_MARKER)


def looks_like_key(value: str) -> bool:
    """Text a message must never quote: it may be a pasted private key."""
    upper = value.upper()
    return "PRIVATE KEY" in upper or "-----BEGIN" in upper


class SecretBytes:
    """Private key material. Only `reveal()` gives the bytes; everything else is redacted."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._value).hexdigest()

    def __repr__(self) -> str:
        return "SecretBytes(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretBytes) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretBytes cannot be pickled")
