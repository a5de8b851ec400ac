"""What a pass finds at its targets (digest, mode, group), looked at again only where needed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.core.desired import Kind
from reconciler.core.plan import OVERSIZED, Observed, digest, read_limit
from reconciler.core.render import Layout, Target
from reconciler.gateway.credentials import leftover_kind, managed_credentials
from reconciler.support import fsio

__all__ = ["ObservationCache", "Observations", "TargetEvents"]


class ObservationCache:
    """What each target file held when it was last read, trusted while its stat key holds.

    Whatever is looked at again (every target, for `apply` and the daemon's full passes),
    re-reading and hashing files nobody touched would be most of a pass with thousands of trust
    entries. One per process; the pass is handed it. The stat key covers mode and group: chmod
    and chown change the ctime.
    """

    def __init__(self) -> None:
        self._files: fsio.StatCache[Observed] = fsio.StatCache()

    def observe(
        self,
        path: str,
        kind: Kind,
        limit: int,
        *,
        reuse: bool = True,
        wanted: str | None = None,
    ) -> Observed | None:
        """The file at `path` as a target of `kind`, or None when there is none. A file larger
        than `limit` (the largest the pass writes) is not read: its digest is `OVERSIZED`.
        `reuse`: False reads it whatever its stat key says (and keeps what it read). `wanted`:
        the digest the target should have; when the file has it, that very string is kept (one
        copy of each of thousands of digests, not two)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None
        mode, gid = info.st_mode & 0o7777, info.st_gid
        if stat.S_ISREG(info.st_mode):
            seen = self._files.get(path, info) if reuse else None
            if (
                seen is not None
                and seen.kind == kind
                and (seen.sha256 == OVERSIZED) == (info.st_size > limit)
            ):
                return seen
            if info.st_size > limit:
                return Observed(kind, OVERSIZED, mode, gid)
        read_at = fsio.now_ns()
        try:
            content = fsio.read_safe(path, limit)
        except fsio.RefusedFileError:
            oversized = stat.S_ISREG(info.st_mode)  # it grew past the limit as it was read
            return Observed(kind, OVERSIZED if oversized else "not-a-regular-file", mode, gid)
        if content is None:
            return None
        found = digest(content)
        if found == wanted:
            found = wanted
        seen = Observed(kind, found, mode, gid)
        self._files.put(path, info, seen, read_at)
        return seen


@dataclass(frozen=True, slots=True)
class TargetEvents:
    """What the daemon's watches on the target directories saw since the previous pass began."""

    watched: frozenset[str]
    """Target directories (real paths) watched without a gap since before the previous pass."""
    touched: frozenset[str]
    """Real paths in those directories that had an event since the previous pass began."""


@dataclass(frozen=True, slots=True)
class Observations:
    """What one pass found at its targets: every path it looked at, and the files there.

    A daemon's next pass reuses what it found for each path whose directory is watched and saw
    no event there: with thousands of trust entries, an lstat per file is a large part of a pass.
    A pass's own writes are forgotten (`forget`), so they never depend on their events' timing.
    """

    found: dict[str, Observed]
    looked_at: frozenset[str]

    @classmethod
    def full(
        cls,
        targets: Sequence[Target],
        layout: Layout,
        cache: ObservationCache,
        *,
        reuse: bool = True,
    ) -> Observations:
        """Every target, every managed trust file and every credential copy present; `reuse`:
        False reads each file again, whatever the cache knows of it."""
        from reconciler.truststore import managed_paths

        found: dict[str, Observed] = {}
        limit = read_limit(targets)
        for target in targets:
            seen = cache.observe(target.path, target.kind, limit, reuse=reuse, wanted=target.sha256)
            if seen is not None:
                found[target.path] = seen
        managed = managed_paths(str(layout.trust_dir), layout.trust_prefix).values()
        credentials = managed_credentials(layout)
        leftovers: tuple[tuple[Iterable[str], Kind], ...] = (
            (managed, "trust"),
            (credentials, "profiles"),
        )
        for paths, kind in leftovers:
            for path in paths:
                if path not in found:
                    seen = cache.observe(path, kind, limit, reuse=reuse)
                    if seen is not None:
                        found[path] = seen
        return cls(found, frozenset([*(t.path for t in targets), *managed, *credentials]))

    def since(
        self,
        events: TargetEvents,
        targets: Sequence[Target],
        layout: Layout,
        cache: ObservationCache,
    ) -> Observations:
        """Look again only where the watches saw something (or could not see)."""
        real_of: dict[str, str] = {}  # a target directory as configured -> its real path
        for directory in {t.path.rpartition("/")[0] for t in targets if t.kind != "trust"}:
            real_of[directory] = os.path.realpath(directory)
        trust_dir = str(layout.trust_dir)
        real_of[trust_dir] = os.path.realpath(trust_dir)
        if real_of[trust_dir] not in events.watched:
            return Observations.full(targets, layout, cache)
        # The events' real paths as the targets name them (a directory may be reached by a link).
        touched: set[str] = set()
        for directory, real in real_of.items():
            if real in events.watched:
                touched.update(
                    f"{directory}/{path.rpartition('/')[2]}"
                    for path in events.touched
                    if path.rpartition("/")[0] == real
                )
        wanted = {t.path: t for t in targets}
        look: dict[str, Kind] = {
            path: t.kind
            for path, t in wanted.items()
            if t.kind != "trust" and real_of[path.rpartition("/")[0]] not in events.watched
        }
        # Trust files no longer wanted are those seen last time, and any new one an event names.
        prefix = layout.trust_prefix
        for path in touched - wanted.keys():
            directory, _, name = path.rpartition("/")
            ours = directory == trust_dir and name.startswith(prefix) and name.endswith(".crt")
            if ours and not os.path.isdir(path):
                look[path] = "trust"
        known = wanted.keys() | self.found.keys()
        for path in (known - self.looked_at) | (known & touched):
            target = wanted.get(path)
            look.setdefault(
                path, target.kind if target is not None else leftover_kind(path, layout)
            )
        # What was found last time stands wherever this pass does not look again.
        found = dict(self.found)
        for path in look:
            found.pop(path, None)
        limit = read_limit(targets)
        for path, kind in look.items():
            target = wanted.get(path)
            seen = cache.observe(
                path, kind, limit, wanted=target.sha256 if target is not None else None
            )
            if seen is not None:
                found[path] = seen
        return Observations(found, frozenset(wanted).union(found))

    def forget(self, paths: Iterable[str]) -> Observations:
        """These paths changed under us (this pass wrote them): look at them again next time."""
        return Observations(self.found, self.looked_at - set(paths))
