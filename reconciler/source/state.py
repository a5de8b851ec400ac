"""The desired state as a pass reads it: a fleet gateway composed with its layers, or one directory.

The one place that tells the two apart, so that the fleet reader and the directory reader each
call one way: `fleet` reads its layers with `snapshot`, and `snapshot` knows nothing of fleets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reconciler.core.evaluate import StateInput
from reconciler.source.cache import SourceCache
from reconciler.source.fleet import fleet_root, read_composed
from reconciler.source.snapshot import read_directory


def read_snapshot(
    state_dir: Path,
    key_dirs: Sequence[Path] = (),
    *,
    no_secrets: bool = False,
    cache: SourceCache | None = None,
    reuse: bool = False,
) -> StateInput:
    """Read the desired state once, retrying while it is being swapped. A gateway of a fleet
    repository (`REPO/gateways/NAME`) is composed with the fleet's shared layers.

    `cache`: what earlier reads found, by file identity (see SourceCache); `reuse`: whether a
    file whose identity is unchanged may be taken from it (else every file is read, and kept)."""
    if cache is not None:
        cache.begin(reuse=reuse)
    repo = fleet_root(state_dir)
    if repo is not None:
        inp = read_composed(repo, state_dir, key_dirs, no_secrets=no_secrets, cache=cache)
    else:
        inp = read_directory(state_dir, key_dirs, no_secrets=no_secrets, cache=cache)
    if cache is not None:
        cache.end()
    return inp
