"""TOML bytes and tables checked against a model's rule table: types, values, unknown keys."""

from __future__ import annotations

import functools
from typing import Any, TypeVar, cast

from reconciler.core.collect import error
from reconciler.core.desired import Finding, Rule, Section
from reconciler.core.secret import looks_like_key
from reconciler.core.toml_limits import INT_MAX, INT_MIN, load_toml

ModelT = TypeVar("ModelT", bound=Section)

# Every pass re-reads every profile, and a Kubernetes volume or git-sync worktree rewrites them all
# on each update, so parses are cached by content (and file name: findings name it). Bounded in
# count, and only small files are kept (a profile is two keys), so that a state of huge files
# cannot make the cache hold more than a few tens of MiB.
_PARSE_CACHE_SIZE = 8192
_PARSE_CACHE_MAX_BYTES = 4096


def parse_toml(data: bytes, file: str, model: type[ModelT]) -> tuple[ModelT | None, list[Finding]]:
    """Bytes to a model: UTF-8, TOML syntax, then types, values and unknown keys, all collected.

    The findings are a new list on every call; the model (frozen, as every Section is) may be
    shared with earlier calls on the same bytes.
    """
    if len(data) > _PARSE_CACHE_MAX_BYTES:
        parsed, findings = _parse_toml(data, file, model)
    else:
        # A class hashes by identity; mypy reads a dataclass's instance __hash__ as the class's.
        parsed, findings = _parse_toml_cached(data, file, cast(Any, model))
    return cast("ModelT | None", parsed), list(findings)


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _parse_toml_cached(
    data: bytes, file: str, model: type[Section]
) -> tuple[Section | None, tuple[Finding, ...]]:
    return _parse_toml(data, file, model)


def _parse_toml(
    data: bytes, file: str, model: type[Section]
) -> tuple[Section | None, tuple[Finding, ...]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (
            error(file, None, f"not UTF-8 text (byte {exc.start})", rule="toml-encoding"),
        )
    raw, problem = load_toml(text)
    if problem is not None:
        if problem.startswith("TOML syntax error"):
            return None, (error(file, None, problem, rule="toml-syntax"),)
        return None, (error(file, None, problem, rule="toml-limits"),)
    parsed, problems = check_table(raw, model)
    return parsed, tuple(
        error(file, where, reason, schema_rule(reason)) for where, reason in problems
    )


def schema_rule(reason: str) -> str:
    """The rule id of a `check_table` problem, told by its reason."""
    if reason.startswith("unknown key"):
        return "toml-unknown-key"
    if reason == "required key is missing":
        return "toml-missing-key"
    return "toml-value"


def check_table(
    raw: object, model: type[ModelT], where: str | None = None
) -> tuple[ModelT | None, list[tuple[str | None, str]]]:
    """A TOML table as `model`, or None and every problem: (dotted key or None, reason).

    Every key is checked, so one run reports every mistake; keys not in `model.RULES` are
    errors (a typo must not silently keep a default)."""
    if not isinstance(raw, dict):
        table = f"a table ([{where}])" if where else "a table"
        return None, [(where, f"must be {table}, got {_shown(raw)}")]
    problems: list[tuple[str | None, str]] = []
    values: dict[str, object] = {}
    for name, rule in model.RULES.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if rule.required:
                problems.append((key, "required key is missing"))
            continue
        value, problem = _check_value(raw[name], rule, key)
        if problem:
            problems += problem
        else:
            values[name] = value
    problems += [
        (f"{where}.{name}" if where else name, "unknown key (typo?)")
        for name in raw
        if name not in model.RULES
    ]
    if problems:
        return None, problems
    return model(**values), []


_TYPE_NAMES = {
    bool: "a boolean (true or false)",
    int: "an integer",
    str: "a string",
    list: "an array of strings",
}


def _check_value(
    value: object, rule: Rule, key: str
) -> tuple[object, list[tuple[str | None, str]]]:
    if issubclass(rule.type, Section):
        return check_table(value, rule.type, key)
    if rule.type is list:
        return _check_list(value, rule, key)
    # type(), not isinstance(): a TOML boolean is no integer here
    if type(value) is not rule.type:
        return None, [(key, f"must be {_TYPE_NAMES[rule.type]}, got {_shown(value)}")]
    if rule.choices and value not in rule.choices:
        wanted = ", ".join(repr(c) for c in rule.choices[:-1]) + f" or {rule.choices[-1]!r}"
        return None, [(key, f"must be {wanted}, got {_shown(value)}")]
    if isinstance(value, str):
        if rule.min_length is not None and len(value) < rule.min_length:
            least = "not be empty" if rule.min_length == 1 else f"have {rule.min_length}+ chars"
            return None, [(key, f"must {least}, got {_shown(value)}")]
        if rule.max_length is not None and len(value) > rule.max_length:
            return None, [(key, f"{len(value)} characters: at most {rule.max_length}")]
    if isinstance(value, int) and (
        (rule.ge is not None and value < rule.ge) or (rule.le is not None and value > rule.le)
    ):
        return None, [(key, f"must be from {rule.ge} to {rule.le}, got {value!r}")]
    return value, []


def _check_list(value: object, rule: Rule, key: str) -> tuple[object, list[tuple[str | None, str]]]:
    """An array of strings (a profile's `servers`), as a tuple; each item by the string rules."""
    if type(value) is not list:
        return None, [(key, f"must be {_TYPE_NAMES[list]}, got {_shown(value)}")]
    if not value:
        return None, [(key, "must hold at least one item")]
    if rule.max_items is not None and len(value) > rule.max_items:
        return None, [(key, f"{len(value)} items: at most {rule.max_items}")]
    item_rule = Rule(str, min_length=rule.min_length, max_length=rule.max_length)
    problems: list[tuple[str | None, str]] = []
    for index, item in enumerate(value):
        problems += _check_value(item, item_rule, f"{key}[{index}]")[1]
    return (None, problems) if problems else (tuple(value), [])


def _shown(value: object, limit: int = 60) -> str:
    """A value as a message quotes it: repr, cut short (a file may hold a megabyte string);
    never text that may be key material."""
    if isinstance(value, str) and looks_like_key(value):
        return "text that looks like key material (not shown)"
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return "an integer outside 64 bits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
