"""TOML text to a table within parsing limits: nesting depth and 64-bit integers."""

from __future__ import annotations

import tomllib
from typing import Any

MAX_TOML_DEPTH = 32
"""Tables and arrays nested deeper than this are refused (a parser recursing 5,000 deep fails)."""
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def load_toml(text: str) -> tuple[dict[str, Any], str | None]:
    """TOML text as a table, or ({}, the reason) when it is not TOML or breaks a parsing limit:
    nesting deeper than MAX_TOML_DEPTH, an integer outside 64 bits. Never raises."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return {}, f"TOML syntax error: {exc}"
    except RecursionError:
        return {}, f"nested deeper than {MAX_TOML_DEPTH} levels"
    except ValueError:  # an integer too long to convert (Python's digit limit)
        return {}, "an integer outside 64 bits (from -2**63 to 2**63-1)"
    problem = _limits(raw)
    return ({}, problem) if problem else (raw, None)


def _limits(raw: dict[str, Any]) -> str | None:
    """The first parsing limit `raw` breaks, walked without recursion."""
    stack: list[tuple[object, int, str]] = [(raw, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_TOML_DEPTH:
            return f"{where or 'a value'}: nested deeper than {MAX_TOML_DEPTH} levels"
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((item, depth + 1, f"{where}.{key}" if where else str(key)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{where}[{n}]") for n, item in enumerate(value))
        elif type(value) is int and not INT_MIN <= value <= INT_MAX:
            return f"{where}: an integer outside 64 bits (from -2**63 to 2**63-1)"
    return None
