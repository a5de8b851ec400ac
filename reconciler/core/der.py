"""DER elements on bytes: the small reader the pure core's certificate and key checks share.

Stdlib only and cheap to import: no `typing`, no `dataclasses`. Raises ValueError for anything
malformed.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing `typing` costs more than this module (mypy reads any
# constant of that name as True).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "BIT_STRING", "CONTEXT", "INTEGER", "NULL", "OBJECT_IDENTIFIER", "OCTET_STRING", "SEQUENCE",
    "SET", "UNIVERSAL", "Tlv", "elements", "encode", "expect", "next_element", "oid_text", "read",
]  # fmt: skip

UNIVERSAL = 0x00
CONTEXT = 0x80

INTEGER = 2
BIT_STRING = 3
OCTET_STRING = 4
NULL = 5
OBJECT_IDENTIFIER = 6
SEQUENCE = 16
SET = 17


class Tlv:
    """One DER element located in a buffer: identifier fields and the offsets that bound it.

    A plain class, not a NamedTuple or dataclass: importing `typing` or `dataclasses` would
    cost more than this module."""

    __slots__ = ("body", "constructed", "end", "number", "start", "tag_class")

    def __init__(
        self, tag_class: int, constructed: bool, number: int, start: int, body: int, end: int
    ) -> None:
        self.tag_class = tag_class
        self.constructed = constructed
        self.number = number
        self.start = start
        self.body = body
        self.end = end


def read(data: bytes, pos: int, end: int) -> Tlv:
    """The element starting at `pos`, which must end by `end`."""
    start = pos
    if pos >= end:
        raise ValueError(f"DER truncated at offset {pos}: expected a tag")
    identifier = data[pos]
    pos += 1
    number = identifier & 0x1F
    if number == 0x1F:
        number = 0
        while True:
            if pos >= end:
                raise ValueError(f"DER truncated at offset {pos}: tag number runs past the end")
            octet = data[pos]
            pos += 1
            number = (number << 7) | (octet & 0x7F)
            if not octet & 0x80:
                break
    if pos >= end:
        raise ValueError(f"DER truncated at offset {pos}: expected a length")
    length = data[pos]
    pos += 1
    if length & 0x80:
        count = length & 0x7F
        if count == 0:
            raise ValueError(f"indefinite length at offset {pos - 1} is BER, not DER")
        if count > end - pos:
            raise ValueError(f"DER truncated at offset {pos}: length octets run past the end")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if length > end - pos:
        raise ValueError(
            f"DER element at offset {start} claims {length} bytes, only {end - pos} remain"
        )
    return Tlv(identifier & 0xC0, bool(identifier & 0x20), number, start, pos, pos + length)


def elements(data: bytes, pos: int, end: int) -> Iterator[Tlv]:
    while pos < end:
        element = read(data, pos, end)
        yield element
        pos = element.end


def next_element(elements: Iterator[Tlv], what: str) -> Tlv:
    element = next(elements, None)
    if element is None:
        raise ValueError(f"{what} is missing")
    return element


def expect(element: Tlv, number: int, what: str, *, constructed: bool = True) -> None:
    if (
        element.tag_class != UNIVERSAL
        or element.number != number
        or element.constructed != constructed
    ):
        raise ValueError(
            f"{what}: expected universal tag {number}, found class {element.tag_class:#x} "
            f"number {element.number}"
        )


def encode(number: int, content: bytes, *, constructed: bool = False) -> bytes:
    """A DER element with a universal low tag number (< 31) and a minimal length."""
    length = len(content)
    if length < 0x80:
        header = bytes([number | (0x20 if constructed else 0), length])
    else:
        octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
        header = bytes([number | (0x20 if constructed else 0), 0x80 | len(octets)]) + octets
    return header + content


def oid_text(content: bytes) -> str:
    """The dotted text of an OBJECT IDENTIFIER's content octets ("1.2.840.113549.1.1.1")."""
    if not content or content[-1] & 0x80:
        raise ValueError("OBJECT IDENTIFIER is truncated")
    arcs: list[int] = []
    value = 0
    for octet in content:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))
