"""Observing targets: a daemon's pass looks again only where its watches saw an event.

`Observations.since` reuses what the previous pass found for every path in a watched directory
that had no event; these tests change files behind its back on purpose to show exactly what it
looks at. The daemon-level check (drift still corrected with incremental passes) is in
test_daemon.py; `RootLock.undisturbed` (another process held the lock) is tested here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

from reconciler.core.plan import digest
from reconciler.core.render import PUBLIC_MODE, Layout, Target
from reconciler.gateway.observe import ObservationCache, Observations, TargetEvents
from reconciler.txn.lock import RootLock
from tests.helpers import REPO


def _layout(tmp_path: Path) -> Layout:
    return Layout(
        root=PurePosixPath(tmp_path / "root"), trust_dir=PurePosixPath(tmp_path / "trust")
    )


def _targets(tmp_path: Path, names: list[str]) -> list[Target]:
    """Targets whose contents are larger than what the tests write behind their back: a file
    larger than anything a pass writes would not be read (its digest: "oversized")."""
    data = tmp_path / "root" / "data"
    padding = b" " * 64
    return [
        Target(str(data / "smtp-inbound.json"), "smtp_inbound", PUBLIC_MODE, b"{}\n" + padding),
        *(
            Target(
                str(tmp_path / "trust" / f"reconciler-{n}.crt"),
                "trust",
                PUBLIC_MODE,
                b"x" + padding,
            )
            for n in names
        ),
    ]


def _write(path: str | Path, content: bytes) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(content)


def _observed(tmp_path: Path, names: list[str]) -> tuple[list[Target], Observations]:
    """Targets written with b"old", and a full first observation of them."""
    targets = _targets(tmp_path, names)
    for target in targets:
        _write(target.path, b"old")
    return targets, Observations.full(targets, _layout(tmp_path), ObservationCache())


def _watching(tmp_path: Path, *touched: str | Path) -> TargetEvents:
    dirs = [tmp_path / "root" / "data", tmp_path / "trust"]
    return TargetEvents(
        frozenset(os.path.realpath(d) for d in dirs),
        frozenset(os.path.realpath(p) for p in touched),
    )


def test_paths_without_an_event_are_not_looked_at_again(tmp_path: Path) -> None:
    targets, first = _observed(tmp_path, ["a", "b"])
    a, b = targets[1].path, targets[2].path
    _write(a, b"changed, no event")
    _write(b, b"changed, with an event")
    again = first.since(_watching(tmp_path, b), targets, _layout(tmp_path), ObservationCache())
    assert again.found[a].sha256 == digest(b"old")  # not looked at: no event named it
    assert again.found[b].sha256 == digest(b"changed, with an event")


def test_an_unwatched_directory_is_always_looked_at(tmp_path: Path) -> None:
    targets, first = _observed(tmp_path, ["a"])
    inbound, trust = targets[0].path, targets[1].path
    _write(inbound, b"edited")
    _write(trust, b"edited")
    only_trust = TargetEvents(frozenset([os.path.realpath(tmp_path / "trust")]), frozenset())
    again = first.since(only_trust, targets, _layout(tmp_path), ObservationCache())
    assert again.found[inbound].sha256 == digest(b"edited")  # data/ unwatched: looked at
    assert again.found[trust].sha256 == digest(b"old")
    # Without a watch on the trust directory, everything is looked at.
    only_data = TargetEvents(frozenset([os.path.realpath(tmp_path / "root" / "data")]), frozenset())
    assert first.since(only_data, targets, _layout(tmp_path), ObservationCache()).found[
        trust
    ].sha256 == digest(b"edited")


def test_new_and_removed_trust_files_follow_their_events(tmp_path: Path) -> None:
    targets = _targets(tmp_path, ["a"])
    for target in targets:
        _write(target.path, b"old")
    stray_before = tmp_path / "trust" / "reconciler-gone.crt"
    _write(stray_before, b"not wanted")
    first = Observations.full(targets, _layout(tmp_path), ObservationCache())
    assert str(stray_before) in first.found
    planted = tmp_path / "trust" / "reconciler-planted.crt"
    _write(planted, b"planted")
    (tmp_path / "trust" / "reconciler-dir.crt").mkdir()
    foreign = tmp_path / "trust" / "other.crt"
    _write(foreign, b"not ours")
    stray_before.unlink()
    events = _watching(
        tmp_path, planted, stray_before, foreign, tmp_path / "trust" / "reconciler-dir.crt"
    )
    again = first.since(events, targets, _layout(tmp_path), ObservationCache())
    assert str(planted) in again.found  # to be deleted by the plan
    assert str(stray_before) not in again.found
    assert str(foreign) not in again.found  # no prefix: never ours
    assert str(tmp_path / "trust" / "reconciler-dir.crt") not in again.found


def test_what_a_pass_wrote_is_looked_at_again_without_its_events(tmp_path: Path) -> None:
    targets, first = _observed(tmp_path, ["a"])
    written = targets[1].path
    _write(written, b"new")
    again = first.forget([written]).since(
        _watching(tmp_path), targets, _layout(tmp_path), ObservationCache()
    )
    assert again.found[written].sha256 == digest(b"new")


def test_a_new_target_is_looked_at(tmp_path: Path) -> None:
    _, first = _observed(tmp_path, ["a"])
    more = _targets(tmp_path, ["a", "new"])
    _write(more[2].path, b"already there")
    again = first.since(_watching(tmp_path), more, _layout(tmp_path), ObservationCache())
    assert again.found[more[2].path].sha256 == digest(b"already there")


def test_the_lock_file_is_one_record_overwritten_in_place(tmp_path: Path) -> None:
    """Never truncated (ext4 flushes a file truncated and written again when it is closed: a
    wait in every pass), and a waiter still reads the holder's PID from it, whatever a
    longer record left before it."""
    path = tmp_path / "lock"
    path.write_bytes(b"released 1 " + b"f" * 200)
    lock = RootLock(tmp_path)
    with lock.held(5):
        holder = (
            "import sys; from pathlib import Path; from reconciler.txn.lock import RootLock\n"
            "RootLock(Path(sys.argv[1])).acquire(0)\n"
        )
        waiter = subprocess.run(
            [sys.executable, "-c", holder, str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert f"held by process {os.getpid()} for over 0 s" in waiter.stderr
    inode = path.stat().st_ino
    for _ in range(3):
        with lock.held(5):
            assert path.stat().st_size == 211
    assert path.stat().st_ino == inode
    with lock.held(5):
        assert lock.undisturbed


def test_the_lock_knows_whether_another_process_held_it(tmp_path: Path) -> None:
    lock = RootLock(tmp_path)
    with lock.held(5):
        assert not lock.undisturbed  # nothing known yet
    with lock.held(5):
        assert lock.undisturbed
    other = (
        "import sys; from pathlib import Path; from reconciler.txn.lock import RootLock\n"
        "lock = RootLock(Path(sys.argv[1])); lock.acquire(5); lock.release()\n"
    )
    subprocess.run([sys.executable, "-c", other, str(tmp_path)], cwd=REPO, check=True, timeout=60)
    with lock.held(5):
        assert not lock.undisturbed
    with lock.held(5):
        assert lock.undisturbed
    crashed = (
        "import os, sys; from pathlib import Path; from reconciler.txn.lock import RootLock\n"
        "RootLock(Path(sys.argv[1])).acquire(5); os._exit(9)\n"
    )
    subprocess.run(
        [sys.executable, "-c", crashed, str(tmp_path)], cwd=REPO, timeout=60, check=False
    )
    with lock.held(5):
        assert not lock.undisturbed
