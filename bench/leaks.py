"""The oracle for "no secret in any output": the forms of a key or credential, found in bytes.

Independent of the reconciler's own redaction (it does not import it), so that the fuzz harness
and the tests judge outputs by what a reader could recover, not by what the boundary looks for:

* a private key: each line of its PEM body, every 16-character piece (on a 4-character
  boundary) of its DER in base64 and of the whole file in base64, and every 8-byte piece of each
  of its private numbers in hex, plain or colon-separated (separators and case ignored);
* a credential: its bytes (surrounding whitespace stripped), its text with undecodable bytes and
  control characters escaped as the boundary writes them, and its text as JSON writes it.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

_PEM_BODY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----(.*?)-----END", re.DOTALL)
_HEX_NOISE = re.compile(rb"[:\s]")
_B64_PIECE = 16
_HEX_PIECE = 16


@dataclass(frozen=True, slots=True)
class Forms:
    """What shows one secret: exact byte strings, and hex pieces found after normalising."""

    name: str
    exact: tuple[bytes, ...]
    hex_pieces: tuple[bytes, ...] = ()

    def found_in(self, output: bytes) -> str | None:
        """A description of the first form of this secret `output` holds, or None."""
        for form in self.exact:
            if form in output:
                return f"{self.name}: {form[:12]!r}..."
        if self.hex_pieces:
            flat = _HEX_NOISE.sub(b"", output).lower()
            for piece in self.hex_pieces:
                if piece in flat:
                    return f"{self.name}: private number piece {piece[:8]!r}..."
        return None


def key_forms(pem: bytes, name: str = "key") -> Forms:
    """Every form of the private key in `pem` that no output may hold."""
    body = _PEM_BODY.search(pem)
    assert body is not None, "no private key block"
    lines = [line.strip() for line in body.group(1).splitlines() if len(line.strip()) >= 16]
    der_b64 = b"".join(line.strip() for line in body.group(1).splitlines())
    whole_b64 = base64.b64encode(pem)
    pieces = {
        text[i : i + _B64_PIECE]
        for text in (der_b64, whole_b64)
        for i in range(0, len(text) - _B64_PIECE, 4)
    }
    numbers = _private_numbers(pem)
    hex_pieces = {
        number[i : i + _HEX_PIECE]
        for number in numbers
        for i in range(0, len(number) - _HEX_PIECE + 1, 2)
    }
    return Forms(name, tuple(lines) + tuple(sorted(pieces)), tuple(sorted(hex_pieces)))


def secret_forms(value: bytes, name: str = "credential") -> Forms:
    """Every form of an opaque credential that no output may hold."""
    raw = value.strip()
    text = raw.decode("utf-8", "surrogateescape")
    escaped = "".join(_escaped(char) for char in text)
    as_json = json.dumps(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    forms = {raw, escaped.encode("utf-8"), as_json[1:-1].encode("utf-8")}
    return Forms(name, tuple(sorted(form for form in forms if form)))


def first_leak(output: bytes | str, forms: list[Forms]) -> str | None:
    """The first secret (named, with a prefix of the form found) that `output` shows."""
    data = output.encode("utf-8", "surrogateescape") if isinstance(output, str) else output
    for form in forms:
        found = form.found_in(data)
        if found is not None:
            return found
    return None


def _escaped(char: str) -> str:
    point = ord(char)
    if 0xDC80 <= point <= 0xDCFF:
        return f"\\x{point - 0xDC00:02x}"
    if (point < 0x20 and char not in "\n\t") or 0x7F <= point <= 0x9F:
        return f"\\x{point:02x}"
    return char


def _private_numbers(pem: bytes) -> list[bytes]:
    key = serialization.load_pem_private_key(pem, None)
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        values = [n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp]
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        values = [key.private_numbers().private_value]
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return [raw.hex().encode()]
    else:
        return []
    out = []
    for value in values:
        text = format(value, "x")
        out.append(("0" + text if len(text) % 2 else text).encode())
    return out
