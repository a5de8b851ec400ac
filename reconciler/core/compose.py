"""Pure fleet composition: fleet.toml rules and shared layers + one gateway's files -> one input.

A fleet repository keeps what every gateway shares once (`shared` layers named in `fleet.toml`)
and what is one gateway's own under `gateways/NAME/`. Composition is by name, lowest precedence
first: each shared layer in the order `fleet.toml` lists them, then the gateway's own files.

* `trust/NAME.*` and `profiles/NAME.toml`: a later file with the same NAME replaces the earlier
  one whole (no key-level merge inside a profile or a PEM bundle).
* `gateway.toml`: tables merge key by key, later layers winning; a shared layer may hold
  `[console]`, `[smtp_inbound]` and `[policy]` defaults but never `[identity]`, which is one
  gateway's own.

Nothing here reads a file: the layers arrive as `StateInput`s read by the snapshot reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from reconciler.core.collect import error
from reconciler.core.desired import NAME_RE, Finding, GatewayFile
from reconciler.core.evaluate import GATEWAY_FILE, KeySource, Skipped, SourceFile, StateInput
from reconciler.core.schema import check_table, schema_rule
from reconciler.core.toml_limits import load_toml

FLEET_FILE = "fleet.toml"
GATEWAYS_DIR = "gateways"
MAX_LAYERS = 16
#: Tables a shared layer's gateway.toml may set for every gateway.
SHARED_TABLES = ("console", "smtp_inbound", "policy")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class FleetFile:
    """`fleet.toml`: the shared layers, repository-relative, lowest precedence first."""

    shared: tuple[str, ...] = ()


def _load(data: bytes) -> tuple[dict[str, Any], str | None]:
    """TOML bytes within the parsing limits, or ({}, the reason)."""
    try:
        return load_toml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return {}, f"not UTF-8 text (byte {exc.start})"


def problem_finding(file: str, problem: str) -> Finding:
    """The finding for a file `_load` refused."""
    if problem.startswith("TOML syntax error"):
        return error(file, None, problem, rule="toml-syntax")
    if problem.startswith("not UTF-8"):
        return error(file, None, problem, rule="toml-encoding")
    return error(file, None, problem, rule="toml-limits")


def parse_fleet(data: bytes) -> tuple[FleetFile | None, list[Finding]]:
    """`fleet.toml` bytes to a FleetFile, or None and every problem (each naming the field)."""
    raw, problem = _load(data)
    if problem is not None:
        return None, [problem_finding(FLEET_FILE, problem)]
    findings = [
        error(FLEET_FILE, key, "unknown key (typo?)", rule="toml-unknown-key")
        for key in raw
        if key != "shared"
    ]
    shared = raw.get("shared", [])
    if not isinstance(shared, list) or not all(isinstance(s, str) for s in shared):
        reason = "must be a list of directory names"
        findings.append(error(FLEET_FILE, "shared", reason, rule="fleet-invalid"))
        return None, findings
    if len(shared) > MAX_LAYERS:
        reason = f"{len(shared)} layers: at most {MAX_LAYERS}"
        findings.append(error(FLEET_FILE, "shared", reason, rule="fleet-invalid"))
    for index, layer in enumerate(shared):
        problem = _layer_problem(layer)
        if problem is not None:
            findings.append(error(FLEET_FILE, f"shared[{index}]", problem, rule="fleet-invalid"))
    if len(set(shared)) != len(shared):
        reason = "a layer is listed twice"
        findings.append(error(FLEET_FILE, "shared", reason, rule="fleet-invalid"))
    if findings:
        return None, findings
    return FleetFile(tuple(shared)), []


def _layer_problem(layer: str) -> str | None:
    """Why `layer` cannot be a shared layer (it must name a directory inside the repository)."""
    shown = json.dumps(layer[:60])
    if not layer or any(ord(c) < 32 or c == "\x7f" for c in layer):
        return f"{shown}: must be a non-empty path without control characters"
    if layer.startswith(("/", "~")):
        return f"{shown}: must be relative to the repository root"
    parts = layer.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return f"{shown}: no '.', '..' or empty parts: a layer stays inside the repository"
    if any(p.startswith(".") for p in parts):
        return f"{shown}: hidden directories (.git, ..data) are not layers"
    if parts[0] == GATEWAYS_DIR:
        return f"{shown}: {GATEWAYS_DIR}/ holds the gateways, not shared layers"
    return None


def is_gateway_name(name: str) -> bool:
    return NAME_RE.match(name) is not None


@dataclass(frozen=True, slots=True)
class Layer:
    """One shared layer as read: `shown` is how messages name its directory (relative to STATE)."""

    shown: str
    inp: StateInput


def compose(
    layers: Sequence[Layer], own: StateInput, *, revision: str, content_digest: str
) -> StateInput:
    """The gateway's composed input: shared layers under its own files (see the module doc)."""
    findings: list[Finding] = []
    trust: dict[str, SourceFile] = {}
    profiles: dict[str, SourceFile] = {}
    # A shared profile's credential files are read with its layer (by absolute path).
    credentials: dict[str, KeySource] = {}
    skipped: list[Skipped] = []
    for layer in layers:
        findings += [_moved(f, layer.shown) for f in layer.inp.findings]
        for name, source in layer.inp.trust:
            trust[name] = _shown_in(source, layer.shown)
        for name, source in layer.inp.profiles:
            profiles[name] = _shown_in(source, layer.shown)
        credentials.update(layer.inp.credentials)
        skipped += layer.inp.skipped
    findings += own.findings
    trust.update(own.trust)
    profiles.update(own.profiles)
    credentials.update(own.credentials)
    shared = [(_join(layer.shown, GATEWAY_FILE), layer.inp.gateway) for layer in layers]
    gateway, found, written = _merge(shared, own.gateway)
    findings += found
    # Positions are looked up in the files as written: the gateway's own gateway.toml (not the
    # merged text, whose lines differ) and every file of every layer.
    originals = [own.gateway] if own.gateway is not None else []
    for layer in layers:
        files = [layer.inp.gateway, *(f for _, f in (*layer.inp.trust, *layer.inp.profiles))]
        originals += [_shown_in(f, layer.shown) for f in files if f is not None]
    return replace(
        own,
        revision=revision,
        gateway=gateway,
        trust=tuple(sorted(trust.items())),
        profiles=tuple(sorted(profiles.items())),
        credentials=tuple(sorted(credentials.items())),
        skipped=tuple(skipped) + own.skipped,
        origins=tuple(sorted(written.items())),
        originals=tuple(originals),
        findings=tuple(findings),
        in_transit=own.in_transit or any(layer.inp.in_transit for layer in layers),
        content_digest=content_digest,
    )


def merge_gateway(
    shared: Sequence[tuple[str, SourceFile | None]], own: SourceFile | None
) -> tuple[SourceFile | None, list[Finding]]:
    """The gateway's gateway.toml with the shared layers' tables merged under it, key by key.

    Each shared gateway.toml is checked here and named in its own messages; one with a mistake
    adds its errors and nothing else. When the gateway's own file is missing, unreadable or not
    plain tables of plain values, it is passed on as it is: the usual checks reject it by name.
    """
    merged, findings, _ = _merge(shared, own)
    return merged, findings


def _merge(
    shared: Sequence[tuple[str, SourceFile | None]], own: SourceFile | None
) -> tuple[SourceFile | None, list[Finding], dict[str, str]]:
    """`merge_gateway`, and where each value that is not the gateway's own was written:
    `table.key` (and `table`, for a table only layers set) -> the layer's file."""
    findings: list[Finding] = []
    defaults: dict[str, dict[str, Any]] = {}
    written: dict[str, str] = {}
    for shown, source in shared:
        if source is None or source.data is None:
            continue
        table, problems = _shared_tables(source.data, shown)
        findings += problems
        for name, values in table.items():
            defaults.setdefault(name, {}).update(values)
            written[name] = shown
            written.update({f"{name}.{key}": shown for key in values})
    if own is None or own.data is None or not defaults:
        return own, findings, {}
    mine, problem = _load(own.data)
    if problem is not None or not _plain_tables(mine):
        # The gateway's own file reports its problem when it is evaluated.
        return own, findings, {}
    merged: dict[str, dict[str, Any]] = {name: dict(values) for name, values in defaults.items()}
    for name, values in mine.items():
        merged.setdefault(name, {}).update(values)
        written.pop(name, None)
        for key in values:
            written.pop(f"{name}.{key}", None)
    return SourceFile(own.path, render_tables(merged)), findings, written


def _shared_tables(data: bytes, shown: str) -> tuple[dict[str, dict[str, Any]], list[Finding]]:
    raw, problem = _load(data)
    if problem is not None:
        return {}, [problem_finding(shown, problem)]
    findings: list[Finding] = []
    if "identity" in raw:
        reason = "[identity] is one gateway's own: keep it in gateways/NAME/gateway.toml"
        findings.append(error(shown, "identity", reason, rule="fleet-invalid"))
    _, problems = check_table({k: v for k, v in raw.items() if k != "identity"}, GatewayFile)
    findings += [error(shown, where, reason, schema_rule(reason)) for where, reason in problems]
    if findings or not _plain_tables(raw):
        return {}, findings
    return {name: dict(raw[name]) for name in SHARED_TABLES if name in raw}, []


def _plain_tables(raw: dict[str, Any]) -> bool:
    """Only tables at the top and only strings, booleans and integers in them."""
    return all(
        isinstance(table, dict) and all(type(v) in (str, bool, int) for v in table.values())
        for table in raw.values()
    )


def render_tables(tables: dict[str, dict[str, Any]]) -> bytes:
    """TOML for tables of strings, booleans and integers (what `_plain_tables` lets through)."""
    lines: list[str] = []
    for name, values in tables.items():
        lines.append(f"[{_key(name)}]")
        for key, value in values.items():
            lines.append(f"{_key(key)} = {_value(value)}")
        lines.append("")
    return "\n".join(lines).encode("utf-8")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string (no ASCII escaping) is a TOML basic string: the same escapes, \uXXXX included.
    return json.dumps(value, ensure_ascii=False)


def _join(prefix: str, rel: str) -> str:
    return rel if rel.startswith("/") else f"{prefix}/{rel}"


def _shown_in(source: SourceFile, prefix: str) -> SourceFile:
    return SourceFile(_join(prefix, source.path), source.data)


def _moved(finding: Finding, prefix: str) -> Finding:
    return replace(finding, file=_join(prefix, finding.file))
