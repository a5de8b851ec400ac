"""The reads a daemon spares: files whose identity is unchanged are taken as last read."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler.source import SourceCache
from reconciler.source.state import read_snapshot
from reconciler.support.fsio import RACY_NS
from tests.helpers.proc import read_calls
from tests.helpers.state import Pki, StateDir, standard_state

LATER_NS = RACY_NS + 1_000_000_000
"""How far the tests move the reader's clock: past the racily-clean window of every file."""


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader reads as if every file had been written long enough ago to be kept."""
    monkeypatch.setattr("reconciler.source.files.now_ns", lambda: time.time_ns() + LATER_NS)


def _sources(state: StateDir, cache: SourceCache, *, reuse: bool = True) -> dict[str, object]:
    inp = read_snapshot(state.path, cache=cache, reuse=reuse)
    assert inp.findings == ()
    found: dict[str, object] = {src.path: src for _, src in (*inp.trust, *inp.profiles)}
    assert inp.gateway is not None
    assert inp.cert is not None
    found[inp.gateway.path] = inp.gateway
    found[inp.cert.path] = inp.cert
    return found


def _many(tmp_path: Path, pki: Pki, count: int = 60) -> StateDir:
    state = standard_state(tmp_path / "state", pki)
    for number in range(count):
        state.trust(f"ca-{number:03d}", pki.root.cert_pem if number % 2 else pki.other_ca.cert_pem)
    return state


def test_unchanged_files_are_taken_as_last_read_without_opening_them(
    tmp_path: Path, pki: Pki, later: None
) -> None:
    state = _many(tmp_path, pki)
    cache = SourceCache()
    first = _sources(state, cache)
    before = read_calls()
    second = _sources(state, cache)
    spent = read_calls() - before
    assert second.keys() == first.keys()
    assert all(second[path] is first[path] for path in first)
    assert spent < len(first) // 4, f"{spent} reads for {len(first)} unchanged files"


def test_a_changed_file_is_read_again_and_the_others_are_not(
    tmp_path: Path, pki: Pki, later: None
) -> None:
    state = _many(tmp_path, pki)
    cache = SourceCache()
    first = _sources(state, cache)
    # Same size, same second: only the inode's ctime (and the bytes) say it changed.
    state.write("profiles/relay.toml", 'url = "smtps://relax.example.com"\n')
    second = _sources(state, cache)
    changed = second["profiles/relay.toml"]
    assert changed is not first["profiles/relay.toml"]
    assert changed.data == b'url = "smtps://relax.example.com"\n'  # type: ignore[attr-defined]
    assert all(second[p] is first[p] for p in first if p != "profiles/relay.toml")


def test_a_file_changed_moments_before_the_read_is_read_again(tmp_path: Path, pki: Pki) -> None:
    """Racily clean: a second write within the clock's tick could keep every stamp the same."""
    state = _many(tmp_path, pki, count=3)
    cache = SourceCache()
    first = _sources(state, cache)
    second = _sources(state, cache)
    assert all(second[path] is not first[path] for path in first)
    assert all(second[path] == first[path] for path in first)


def test_a_pass_that_looks_at_everything_reads_every_file(
    tmp_path: Path, pki: Pki, later: None
) -> None:
    state = _many(tmp_path, pki)
    cache = SourceCache()
    first = _sources(state, cache)
    before = read_calls()
    again = _sources(state, cache, reuse=False)
    assert read_calls() - before >= len(first)
    assert all(again[path] is not first[path] for path in first)
    # ... and keeps what it read for the passes after it.
    assert all(_sources(state, cache)[path] is again[path] for path in first)


def test_a_file_replaced_by_a_fifo_is_refused_not_taken_from_the_cache(
    tmp_path: Path, pki: Pki, later: None
) -> None:
    state = _many(tmp_path, pki, count=2)
    cache = SourceCache()
    _sources(state, cache)
    fifo = state.path / "trust" / "ca-000.pem"
    fifo.unlink()
    os.mkfifo(fifo)
    inp = read_snapshot(state.path, cache=cache, reuse=True)
    assert [(f.file, f.rule) for f in inp.findings] == [("trust/ca-000.pem", "file-not-regular")]


def test_a_file_replaced_by_a_link_out_of_state_is_refused(
    tmp_path: Path, pki: Pki, later: None
) -> None:
    state = _many(tmp_path, pki, count=2)
    cache = SourceCache()
    _sources(state, cache)
    outside = tmp_path / "outside.pem"
    outside.write_bytes(pki.root.cert_pem)
    link = state.path / "trust" / "ca-001.pem"
    link.unlink()
    link.symlink_to(outside)
    inp = read_snapshot(state.path, cache=cache, reuse=True)
    assert [(f.file, f.rule) for f in inp.findings] == [("trust/ca-001.pem", "path-escape")]


def test_the_cache_keeps_only_the_last_read_state(tmp_path: Path, pki: Pki, later: None) -> None:
    """A Kubernetes volume's next version is a new directory: the old one is forgotten."""
    volume = tmp_path / "volume"
    old = StateDir(volume / "..v1")
    standard_state(old.path, pki)
    (volume / "..data").symlink_to("..v1")
    for top in ("gateway.toml", "tls", "trust", "profiles"):
        (volume / top).symlink_to(f"..data/{top}")
    cache = SourceCache()
    read_snapshot(volume, cache=cache, reuse=True)
    assert cache.knows(str(old.path / "profiles"))
    new = StateDir(volume / "..v2")
    standard_state(new.path, pki).profile("relay", 'url = "smtps://relay2.example.com"\n')
    (volume / "..tmp").symlink_to("..v2")
    os.rename(volume / "..tmp", volume / "..data")
    inp = read_snapshot(volume, cache=cache, reuse=True)
    relay = dict(inp.profiles)["relay"]
    assert relay.data == b'url = "smtps://relay2.example.com"\n'
    assert cache.knows(str(new.path / "profiles"))
    assert not cache.knows(str(old.path / "profiles"))
