"""The desired state as a pass reads it: a fleet gateway composed with its layers, or one directory.

The one place that tells the two apart, so that the fleet reader and the directory reader each
call one way: `fleet` reads its layers with `snapshot`, and `snapshot` knows nothing of fleets.
It is also where the output boundary learns what the state uses: the identity key and every
credential read stay redacted in every output for as long as this state dir uses them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from reconciler.core.evaluate import StateInput
from reconciler.source.cache import SourceCache
from reconciler.source.fleet import fleet_root, read_composed
from reconciler.source.snapshot import read_directory
from reconciler.support.redact import in_use


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
    if not inp.in_transit:
        keys = [inp.key.data.reveal()] if inp.key is not None and inp.key.data is not None else []
        secrets = [s.data.reveal() for _, s in inp.credentials if s.data is not None]
        in_use(f"state:{os.path.abspath(state_dir)}", keys=keys, secrets=secrets)
    return inp
