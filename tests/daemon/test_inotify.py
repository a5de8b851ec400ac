"""The loop's own inotify watches, on real directories: what each event becomes, a directory
watched under two keys, a watched directory that goes, a queue that overflows; and the
watcher that reads them in the loop, without a thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.daemon.inotify import Change, DirectoryWatches
from reconciler.daemon.pending import PendingEvents, Wakeup
from reconciler.daemon.watch import WatchdogLogHandler, Watcher, WatchSpec


@pytest.fixture
def watches() -> Iterator[DirectoryWatches[str]]:
    found: DirectoryWatches[str] = DirectoryWatches()
    yield found
    found.close()


def test_each_change_in_a_watched_directory_comes_with_its_kind_and_path(
    watches: DirectoryWatches[str], tmp_path: Path
) -> None:
    seen = tmp_path / "seen.pem"
    seen.write_bytes(b"read me")
    watches.add("dir", str(tmp_path))
    assert watches.read() == []
    seen.read_bytes()  # opens and reads are not watched: every pass reads
    target = tmp_path / "cert.pem"
    target.write_bytes(b"one")
    target.chmod(0o600)
    os.rename(target, tmp_path / "moved.pem")
    (tmp_path / "moved.pem").unlink()
    (tmp_path / "sub").mkdir()
    path, moved, sub = str(target), str(tmp_path / "moved.pem"), str(tmp_path / "sub")
    found = watches.read()
    assert [(key, c.kind, c.path) for key, c in found] == [
        ("dir", "created", path),
        ("dir", "modified", path),
        ("dir", "closed", path),
        ("dir", "attrib", path),
        ("dir", "moved", path),
        ("dir", "moved", moved),
        ("dir", "deleted", moved),
        ("dir", "created", sub),
    ]
    assert [c.is_directory for _, c in found] == [False] * 7 + [True]


def test_a_directory_watched_for_two_keys_tells_both_until_one_is_removed(
    watches: DirectoryWatches[str], tmp_path: Path
) -> None:
    watches.add("target", str(tmp_path))
    watches.add("control", str(tmp_path))
    (tmp_path / "a").touch()
    assert {key for key, _ in watches.read()} == {"target", "control"}
    watches.remove("control")
    (tmp_path / "b").touch()
    assert {key for key, _ in watches.read()} == {"target"}
    watches.remove("target")
    (tmp_path / "c").touch()
    assert watches.read() == []


def test_a_watched_directory_that_goes_is_reported_once_and_forgotten(
    watches: DirectoryWatches[str], tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    watches.add("gone", str(gone))
    gone.rmdir()
    assert set(watches.read()) == {("gone", Change("gone", str(gone)))}
    gone.mkdir()
    (gone / "new").touch()
    assert watches.read() == []
    watches.add("gone", str(gone))  # watched anew, as the watcher does after the trouble
    (gone / "newer").touch()
    assert [(key, c.kind) for key, c in watches.read()][:1] == [("gone", "created")]


def test_a_directory_that_cannot_be_watched_is_an_os_error_naming_it(
    watches: DirectoryWatches[str], tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        watches.add("missing", str(tmp_path / "missing"))
    assert missing.value.filename == str(tmp_path / "missing")
    (tmp_path / "file").touch()
    with pytest.raises(NotADirectoryError):
        watches.add("file", str(tmp_path / "file"))


def test_events_past_the_kernels_queue_are_reported_as_an_overflow(
    watches: DirectoryWatches[str], tmp_path: Path
) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 200_000:
        pytest.skip(f"max_queued_events is {limit}: too many events to make here")
    watches.add("dir", str(tmp_path))
    one, two = tmp_path / "one", tmp_path / "two"
    one.touch()
    two.touch()
    # Alternating, so that the kernel cannot merge each event into the one before it.
    for n in range(limit // 2 + 10):
        os.chmod(one, 0o600 | (n & 1) << 5)
        os.chmod(two, 0o600 | (n & 1) << 5)
    found = watches.read()
    assert (None, Change("overflow", None)) in found
    assert len(found) <= limit + 1


def _watcher(tmp_path: Path) -> tuple[Watcher, PendingEvents, Wakeup]:
    wakeup = Wakeup()
    pending = PendingEvents(30.0, 60.0, wakeup)
    return Watcher(pending, WatchdogLogHandler(pending), wakeup), pending, wakeup


def test_a_data_link_swap_wakes_the_loop_and_is_due_at_once_without_a_thread(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "state"
    volume.mkdir()
    (volume / "..2026_01").mkdir()
    os.symlink("..2026_01", volume / "..data")
    watcher, pending, wakeup = _watcher(tmp_path)
    threads = threading.active_count()
    try:
        assert watcher.establish((WatchSpec(str(volume), False, "state"),))
        assert threading.active_count() == threads
        watcher.drain()
        pending.take()
        assert pending.due_at() is None

        (volume / "..2026_02").mkdir()
        os.symlink("..2026_02", volume / "..data_tmp")
        os.rename(volume / "..data_tmp", volume / "..data")
        started = time.monotonic()
        wakeup.wait(30)
        assert time.monotonic() - started < 20, "the event did not end the wait"
        watcher.drain()
        due = pending.due_at()
        assert due is not None
        assert due <= time.monotonic()
    finally:
        watcher.close()
        wakeup.close()


def test_the_targets_events_name_the_paths_and_a_removed_target_dir_is_trouble(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    watcher, pending, wakeup = _watcher(tmp_path)
    try:
        watcher.establish((WatchSpec(str(data), False, "target"),))
        watcher.target_events(look_at_everything=False)  # the first take is blind
        assert watcher.target_paths() == {str(data)}
        (data / "key.pem").write_bytes(b"x")
        events = watcher.target_events(look_at_everything=False)
        assert events is not None
        assert str(data / "key.pem") in events.touched
        assert pending.take_trouble() is None

        (data / "key.pem").unlink()
        data.rmdir()
        watcher.drain()
        assert pending.take_trouble() == "watched directory removed"
        assert watcher.target_paths() == frozenset()
    finally:
        watcher.close()
        wakeup.close()


def test_a_watch_of_a_subtree_still_goes_through_watchdog(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "trust").mkdir(parents=True)
    watcher, pending, wakeup = _watcher(tmp_path)
    try:
        threads = threading.active_count()
        watcher.establish((WatchSpec(str(checkout), True, "state"),))
        assert threading.active_count() > threads
        pending.take()
        (checkout / "trust" / "ca.pem").write_bytes(b"x")
        deadline = time.monotonic() + 20
        while pending.due_at() is None and time.monotonic() < deadline:
            wakeup.wait(deadline - time.monotonic())
        assert pending.due_at() is not None, "no event from the subtree"
    finally:
        watcher.close()
        wakeup.close()


def test_a_failing_inotify_descriptor_is_trouble_not_a_spinning_loop(tmp_path: Path) -> None:
    """A read that fails would leave the descriptor readable, waking the loop at once forever:
    the watcher drops its watches and reports trouble, so the loop sets them up anew."""
    data = tmp_path / "data"
    data.mkdir()
    watcher, pending, wakeup = _watcher(tmp_path)
    try:
        spec = WatchSpec(str(data), False, "target")
        watcher.establish((spec,))
        direct = watcher._direct  # the descriptor under the watcher is the point
        assert direct is not None
        os.close(direct.fileno())
        watcher.drain()
        assert pending.take_trouble() == "watcher error"
        assert watcher.target_paths() == frozenset()
        assert watcher.establish((spec,)) == [spec]
        (data / "key.pem").write_bytes(b"x")
        watcher.target_events(look_at_everything=False)  # blind after the trouble
        (data / "cert.pem").write_bytes(b"y")
        events = watcher.target_events(look_at_everything=False)
        assert events is not None
        assert str(data / "cert.pem") in events.touched
    finally:
        watcher.close()
        wakeup.close()
