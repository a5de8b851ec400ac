"""Planning a pass: read the desired state, evaluate, render and compare; no target touched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath

from reconciler.config import Settings
from reconciler.core.evaluate import Evaluation, evaluate
from reconciler.core.plan import Plan, plan
from reconciler.core.render import Layout, Target, render
from reconciler.errors import SettingsError
from reconciler.gateway import ObservationCache, Observations, TargetEvents
from reconciler.source import SourceCache, read_snapshot
from reconciler.txn import records

__all__ = ["Planned", "group_id", "layout_for", "make_plan"]


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
    sources: SourceCache | None = None,
) -> Planned:
    """Read, validate, render and compare: everything a pass decides, no target touched.

    With the previous pass's `prior` observations and the target `events` seen since, only the
    targets something happened to are looked at again (the daemon), and input files whose
    identity did not change since `sources` last read them are not read again; without
    `events`, every target is looked at and every input file read."""
    inp = read_snapshot(
        settings.state_dir, settings.key_dirs, cache=sources, reuse=events is not None
    )
    evaluation = evaluate(inp, now or datetime.now(UTC))
    if evaluation.desired is None:
        return Planned(inp.revision, evaluation, None, in_transit=inp.in_transit)
    layout = layout_for(settings)
    targets = render(evaluation.desired, layout)
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
    )
