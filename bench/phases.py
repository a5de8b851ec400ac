"""`python -m bench.phases [--entries N]`: where a pass spends its time, phase by phase.

Three passes in one process on a Kubernetes-style volume of N trust entries (default 5,000) and a
fifth as many profiles, as a daemon runs them (its caches kept): a cold pass on an empty ROOT, a
full pass with nothing to change (as at a daemon's start, which then looks at the trust store's
links once), then one trust entry changed with the target events saying nothing else moved. Each
is run under cProfile and reported as the cumulative time of each phase's function. cProfile
slows everything several times over: read the shares, and take the wall figures from `python -m
bench --only scale`.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from typing import TYPE_CHECKING

from bench.harness import TRASH
from bench.pki import identities, trust_pems
from bench.scale import scale_state
from bench.workspace import Workspace

if TYPE_CHECKING:
    from reconciler.config import Settings
    from reconciler.reconcile import Hints, PassMemory, Tools

#: (what the phase is, the function whose cumulative time it is)
PHASES = (
    ("read the desired state", "read_snapshot"),
    ("validate", "evaluate"),
    ("render", "render"),
    ("observe the targets", "full"),
    ("observe the targets (events)", "since"),
    ("plan", "plan"),
    ("stage + journal (prepare)", "prepare"),
    ("swap (renames, journal)", "swap"),
    ("trust links", "_refresh_trust"),
    ("hooks", "_run_hooks"),
    ("commit", "commit"),
    ("audit records", "record_many"),
    ("status.json", "_record_status"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    parser.add_argument("--entries", type=int, default=5000, help="trust entries (5000)")
    args = parser.parse_args(argv)
    ws = Workspace.create("phases")
    try:
        ws.write_config()
        pems = trust_pems(args.entries + 1)
        identity = identities(1)[0]
        files = scale_state(args.entries, pems, identity.cert_pem, identity.key_pem)
        ws.volume.publish(files)
        os.environ["RECONCILER_CONFIG"] = str(ws.config)
        _passes(ws, files, pems[args.entries])
    finally:
        ws.cleanup()
        TRASH.empty()
    return 0


def _passes(ws: Workspace, files: dict[str, bytes], spare_pem: bytes) -> None:
    from reconciler.audit import AuditLog
    from reconciler.config import load_settings
    from reconciler.gateway import TargetEvents
    from reconciler.reconcile import Hints, PassMemory, Recorder, Tools, settle_trust_links

    settings = load_settings()
    tools = Tools(Recorder(AuditLog(settings.audit_path)))
    memory = _profiled("cold pass (empty ROOT)", settings, tools, PassMemory(), Hints())
    memory = _profiled("a full pass, nothing to change", settings, tools, memory, Hints())
    settle_trust_links(settings, tools.caches)  # what the daemon does after its start pass
    changed = dict(files)
    changed["trust/ca-00007.pem"] = spare_pem
    _, old = ws.volume.publish(changed)
    ws.volume.retire(old)
    directories = (settings.root / "data", settings.root / "nginx", settings.trust_path)
    watched = frozenset(os.path.realpath(d) for d in directories)
    events = TargetEvents(watched=watched, touched=frozenset())
    hints = Hints(events=events, undisturbed=True)
    _profiled("one trust entry changed (as the daemon)", settings, tools, memory, hints)


def _profiled(
    label: str, settings: Settings, tools: Tools, memory: PassMemory, hints: Hints
) -> PassMemory:
    from reconciler.reconcile import reconcile

    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    result, memory = reconcile(settings, memory, hints, tools)
    profile.disable()
    wall_ms = (time.perf_counter() - started) * 1000
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    print(f"\n{label}: {result.outcome}, {wall_ms:,.0f} ms under cProfile")
    for name, function in PHASES:
        spent = max(
            (
                row[3]
                for (path, _, fname), row in stats.items()
                if fname == function and "/reconciler/" in path
            ),
            default=0.0,
        )
        if spent:
            print(f"  {name:<30} {spent * 1000:9.1f} ms")
    return memory


if __name__ == "__main__":
    raise SystemExit(main())
