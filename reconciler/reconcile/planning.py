"""Planning a pass: read the desired state, evaluate, render and compare; no target touched."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from reconciler.config import Settings
from reconciler.core.desired import Kind
from reconciler.core.evaluate import Evaluation, evaluate
from reconciler.core.layout import CREDENTIAL_SUFFIXES, RootLayout
from reconciler.core.plan import Observed, Plan, plan, read_limit
from reconciler.core.render import Layout, Target, render
from reconciler.core.wording import counted
from reconciler.errors import SettingsError
from reconciler.gateway import (
    DirMode,
    ObservationCache,
    Observations,
    TargetEvents,
    inspect_root,
)
from reconciler.reconcile.events import Progress
from reconciler.source import SourceCache, read_snapshot
from reconciler.txn import records

__all__ = ["Planned", "group_id", "layout_for", "make_plan", "targets_as_left"]


@dataclass(frozen=True, slots=True)
class Planned:
    """A desired state evaluated and compared with the targets."""

    revision: str
    evaluation: Evaluation
    plan: Plan | None
    targets: tuple[Target, ...] = ()
    in_transit: bool = False
    last_applied: records.LastApplied | None = None
    content_digest: str = ""
    """What was read, whatever the revision says: a new key in key_dirs under the same commit
    is a new desired state (backoff tells states apart by this)."""
    observations: Observations | None = None
    blocked: str | None = None
    """Why a valid state cannot be compared with the targets: a link (or a file) where one of
    the reconciler's directories under ROOT belongs. Nothing was looked at through it."""
    dir_modes: tuple[DirMode, ...] = ()
    """The reconciler's directories under ROOT whose mode a pass sets back."""


def layout_for(settings: Settings) -> Layout:
    """Where the targets go and how they are owned, from the settings."""
    from reconciler.gateway import detect_ssl_on

    return Layout(
        root=PurePosixPath(settings.root),
        trust_dir=PurePosixPath(settings.trust_path),
        trust_prefix=settings.trust_prefix,
        ssl_on=detect_ssl_on(settings.nginx_ssl_on),
        key_mode=settings.key_mode_bits,
        gid=group_id(settings.file_group),
    )


def group_id(group: str | None) -> int | None:
    """`file_group` as a numeric group id; SettingsError when the host has no such group."""
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SettingsError(f"file_group: no group named {group!r} on this host") from None


def make_plan(
    settings: Settings,
    now: datetime | None = None,
    *,
    cache: ObservationCache | None = None,
    prior: Observations | None = None,
    events: TargetEvents | None = None,
    progress: Progress | None = None,
    sources: SourceCache | None = None,
) -> Planned:
    """Read, validate, render and compare: everything a pass decides, no target touched.

    With the previous pass's `prior` observations and the target `events` seen since, only the
    targets something happened to are looked at again (the daemon), and input files whose
    identity did not change since `sources` last read them are not read again; without
    `events`, every target is looked at and every input file read. `progress` hears each step."""
    if progress is not None:
        progress.step("reading the desired state")
    inp = read_snapshot(
        settings.state_dir, settings.key_dirs, cache=sources, reuse=events is not None
    )
    if progress is not None:
        files = 1 + len(inp.trust) + len(inp.profiles) + (inp.cert is not None)
        progress.step(f"validating {counted(files, 'file')}")
    evaluation = evaluate(inp, now or datetime.now(UTC))
    if evaluation.desired is None:
        return Planned(inp.revision, evaluation, None, in_transit=inp.in_transit)
    layout = layout_for(settings)
    root_dirs = inspect_root(settings.root, settings.key_mode_bits)
    if root_dirs.refused:
        reason = "; ".join(root_dirs.refused)
        return Planned(inp.revision, evaluation, None, blocked=reason)
    targets = render(evaluation.desired, layout)
    if progress is not None:
        progress.step(f"comparing {counted(len(targets), 'target')} with what is in place")
    last = records.load_last_applied(settings.var_dir)
    cache = cache if cache is not None else ObservationCache()
    if prior is not None and events is not None:
        observations = prior.since(events, targets, layout, cache)
    else:
        observations = Observations.full(targets, layout, cache, reuse=events is not None)
    result = plan(inp.revision, targets, observations.found, last.targets if last else None)
    return Planned(
        inp.revision,
        evaluation,
        result,
        targets,
        last_applied=last,
        content_digest=inp.content_digest,
        observations=observations,
        dir_modes=root_dirs.modes,
    )


def targets_as_left(
    settings: Settings,
    targets: Sequence[Target],
    touched: Iterable[str],
    cache: ObservationCache,
) -> bool:
    """Whether every managed file among `touched` (real paths an event named) is as `targets`
    (what the last pass left in place) say: then nothing happened there that a pass would undo,
    and the events were the pass's own writes (or a change and its reversal). A file nobody
    manages (a hash link, a temp file, another program's file) counts as unchanged."""
    layout = RootLayout(settings.root)
    trust_dir = str(settings.trust_path)
    prefix = settings.trust_prefix
    secrets = str(layout.secrets)
    wanted = {t.path: t for t in targets}
    real_of = {d: os.path.realpath(d) for d in {p.rpartition("/")[0] for p in wanted}}
    real_of.update({d: os.path.realpath(d) for d in (trust_dir, secrets)})
    configured = {real: d for d, real in real_of.items()}
    looked: list[Target] = []
    found: dict[str, Observed] = {}
    limit = read_limit(targets)
    for path in touched:
        real_dir, _, name = path.rpartition("/")
        directory = configured.get(real_dir)
        if directory is None:
            continue
        shown = f"{directory}/{name}"
        target = wanted.get(shown)
        if target is not None:
            looked.append(target)
            kind: Kind = target.kind
        elif directory == trust_dir and name.startswith(prefix) and name.endswith(".crt"):
            kind = "trust"
        elif directory == secrets and name.endswith(CREDENTIAL_SUFFIXES):
            kind = "profiles"
        else:
            continue  # not ours: nothing a pass would do there
        seen = cache.observe(shown, kind, limit)
        if seen is not None:
            found[shown] = seen
    return plan("", looked, found).empty
