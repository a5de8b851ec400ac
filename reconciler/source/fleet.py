"""Reads one gateway of a fleet repository: fleet.toml, shared layers and its own files, composed.

A fleet repository (one git repository for many gateways):

    REPO/
      fleet.toml              shared = ["common"]  (the layers, lowest precedence first)
      common/                 trust/, profiles/, gateway.toml ([console], [smtp_inbound], [policy])
      gateways/NAME/          one gateway's STATE: gateway.toml with [identity], tls/, overrides

A gateway's `state_dir` is `REPO/gateways/NAME` (REPO may be a git-sync link). `fleet.toml` two
levels up makes it a fleet member: every layer is read by the snapshot reader (its own limits
and escape checks, each layer confined to its own directory) and composed by
`reconciler.core.compose`. The revision is the commit checked out at REPO. REPO is resolved
once; if it moves while the layers are read (a git-sync swap), the whole read is retried.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from reconciler.core.collect import error
from reconciler.core.compose import (
    FLEET_FILE,
    GATEWAYS_DIR,
    FleetFile,
    Layer,
    compose,
    is_gateway_name,
    parse_fleet,
)
from reconciler.core.desired import Finding
from reconciler.core.evaluate import StateInput
from reconciler.source.cache import SourceCache
from reconciler.source.links import RETRIES, RETRY_PAUSE_S, git_revision, inside
from reconciler.source.snapshot import read_directory
from reconciler.support.fsio import RefusedFileError, read_safe

__all__ = ["fleet_root", "gateways_of", "read_composed", "shared_layers"]

#: fleet.toml is a few lines; anything larger is a mistake.
MAX_FLEET_FILE_BYTES = 65536


def fleet_root(state_dir: Path) -> Path | None:
    """REPO when `state_dir` is `REPO/gateways/NAME` and REPO holds fleet.toml, else None."""
    absolute = Path(os.path.abspath(state_dir))
    parent = absolute.parent
    if parent.name != GATEWAYS_DIR:
        return None
    repo = parent.parent
    return repo if os.path.lexists(repo / FLEET_FILE) else None


def gateways_of(directory: Path) -> list[Path] | None:
    """Every gateway's STATE when `directory` is a fleet repository's root, else None.

    What `validate REPO` checks: each `gateways/NAME` directory (hidden entries skipped; a name
    that is no NAME is still listed, and its validation says so).
    """
    if not os.path.lexists(directory / FLEET_FILE):
        return None
    base = directory / GATEWAYS_DIR
    try:
        names = sorted(e.name for e in os.scandir(base) if e.is_dir() and e.name[0] != ".")
    except OSError:
        return []
    return [base / name for name in names]


def read_composed(
    repo: Path,
    state_dir: Path,
    key_dirs: Sequence[Path] = (),
    *,
    no_secrets: bool = False,
    cache: SourceCache | None = None,
) -> StateInput:
    """The gateway at `state_dir` composed with its fleet's shared layers; retried while moving."""
    for attempt in range(RETRIES):
        real = os.path.realpath(repo)
        inp = _read_once(repo, real, state_dir, key_dirs, no_secrets, cache)
        if os.path.realpath(repo) == real and not inp.in_transit:
            return inp
        time.sleep(RETRY_PAUSE_S * 2**attempt)
    reason = "the fleet repository kept changing while being read; will read it again"
    finding = error(str(state_dir), None, reason, rule="state-in-transit")
    return StateInput("unknown", None, findings=(finding,), in_transit=True)


def _read_once(
    repo: Path,
    real: str,
    state_dir: Path,
    key_dirs: Sequence[Path],
    no_secrets: bool,
    cache: SourceCache | None,
) -> StateInput:
    name = os.path.basename(os.path.abspath(state_dir))
    if not is_gateway_name(name) or "\n" in name:
        reason = f"gateway directory name {name[:60]!r} must be a NAME ([a-z0-9][a-z0-9._-]*)"
        finding = error(str(state_dir), None, reason, rule="name-invalid")
        return StateInput("unknown", None, findings=(finding,))
    # Every layer is read through REPO resolved once (`real`): one commit for all of them.
    own_dir = Path(real) / GATEWAYS_DIR / name
    own_real = os.path.realpath(own_dir)
    if not inside(own_real, real):
        reason = "the gateway's directory leads outside the fleet repository"
        finding = error(str(state_dir), None, reason, rule="path-escape")
        return StateInput("unknown", None, findings=(finding,))
    if not inside(own_real, os.path.join(real, GATEWAYS_DIR)) or own_real == os.path.join(
        real, GATEWAYS_DIR
    ):
        where = os.path.relpath(own_real, real)
        reason = f"the gateway's directory leads to {where}, outside {GATEWAYS_DIR}/"
        finding = error(str(state_dir), None, reason, rule="path-escape")
        return StateInput("unknown", None, findings=(finding,))
    own = read_directory(own_dir, key_dirs, no_secrets=no_secrets, cache=cache)
    fleet, problems = _fleet_file(Path(real))
    layers: list[Layer] = []
    digest = hashlib.sha256(own.content_digest.encode())
    resolved: dict[str, str] = {}
    for layer in fleet.shared if fleet is not None else ():
        shown = f"../../{layer}"
        path = Path(real) / layer
        where = os.path.realpath(path)
        if not inside(where, real) or where == real:
            reason = f"{layer}: leads outside the repository"
            problems.append(error(FLEET_FILE, "shared", reason, rule="path-escape"))
            continue
        # Judged where it leads, not how it is written: a link can make any name a gateway.
        problem = _layer_problem_resolved(os.path.relpath(where, real), resolved.get(where))
        if problem is not None:
            reason = f"{layer}: {problem}"
            problems.append(error(FLEET_FILE, "shared", reason, rule="fleet-invalid"))
            continue
        resolved[where] = layer
        if not os.path.isdir(where):
            reason = f"{layer}: no such directory"
            problems.append(error(FLEET_FILE, "shared", reason, rule="fleet-invalid"))
            continue
        if not os.listdir(where):
            continue  # an empty layer adds nothing
        inp = read_directory(path, key_dirs, no_secrets=no_secrets, cache=cache)
        layers.append(Layer(shown, inp))
        digest.update(f"\0{layer}\0{inp.content_digest}".encode())
    content = digest.hexdigest()
    revision = git_revision(Path(real)) or "sha256:" + content
    composed = compose(layers, own, revision=revision, content_digest=content)
    if problems:
        # Named relative to STATE, as every other message is.
        moved = tuple(replace(f, file=f"../../{FLEET_FILE}") for f in problems)
        composed = replace(composed, findings=moved + composed.findings)
    return composed


def _layer_problem_resolved(relative: str, same_as: str | None) -> str | None:
    """Why a layer that resolves to `relative` (inside the repository) cannot be one: what
    `parse_fleet` checks of the name as written, checked again of where its links lead."""
    parts = relative.split(os.sep)
    if parts[0] == GATEWAYS_DIR:
        return f"leads into {relative}: {GATEWAYS_DIR}/ holds the gateways, not shared layers"
    if any(part.startswith(".") for part in parts):
        return f"leads into {relative}: hidden directories (.git, ..data) are not layers"
    if same_as is not None:
        return f"leads to {relative}, the same directory as {same_as}: list it once"
    return None


def _fleet_file(real: Path) -> tuple[FleetFile | None, list[Finding]]:
    """fleet.toml read like any input file: a regular file (no link), within its size limit."""
    try:
        data = read_safe(real / FLEET_FILE, MAX_FLEET_FILE_BYTES)
    except RefusedFileError as exc:
        rule = "file-too-large" if "over the limit" in exc.reason else "file-not-regular"
        return None, [error(FLEET_FILE, None, exc.reason, rule=rule)]
    except OSError as exc:
        reason = f"cannot be read: {exc.strerror or exc}"
        return None, [error(FLEET_FILE, None, reason, rule="file-unreadable")]
    if data is None:
        return None, [error(FLEET_FILE, None, "file does not exist", rule="file-missing")]
    return parse_fleet(data)


def shared_layers(repo: Path) -> list[Path]:
    """The shared layer directories fleet.toml names (none while it is invalid): watched too."""
    fleet, _ = _fleet_file(Path(os.path.realpath(repo)))
    return [repo / layer for layer in (fleet.shared if fleet is not None else ())]
