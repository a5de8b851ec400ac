"""VAR/journal.json: one pass's change set and phase, written durably and read back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from reconciler.errors import ApplyError, ReconcilerError
from reconciler.support import fsio

Phase = Literal["prepared", "swapped", "rolling-back"]

JOURNAL = "journal.json"
JOURNAL_LIMIT = 256 << 20
"""A journal names every target of a pass (thousands of trust entries): far under this."""
NEW = "new.bin"
"""Staged new contents of a pass, concatenated (kept with its generation)."""
LINK = "link:"
"""An Entry.backup that starts with it records a symbolic link (its target follows), not bytes."""
OLD = "old.bin"
"""The previous contents of every target a pass replaces or deletes: what a rollback restores."""
OVERSIZED = "oversized:"
"""An Entry.backup that starts with it records a previous file larger than anything the pass
writes (its size follows): never read, not kept; a rollback removes the target."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One target in the journal: where its new and previous contents are kept."""

    path: str
    kind: str
    action: str
    cause: str
    staged: str | None
    backup: str | None
    mode: int | None
    gid: int | None
    before_mode: int | None
    before_gid: int | None
    before_sha256: str | None
    after_sha256: str | None
    secret: bool


@dataclass(frozen=True, slots=True)
class Journal:
    """The whole change set of one pass, as fsynced to VAR/journal.json."""

    id: str
    revision: str
    phase: Phase
    kinds: tuple[str, ...]
    trust_changed: bool
    trust_removed: bool
    started: str
    entries: tuple[Entry, ...]

    def to_json(self) -> bytes:
        # Flat values only, so no dataclasses.asdict (it deep-copies every field, slow for a
        # pass of many entries); compact, since indent falls back to the pure-Python encoder.
        raw = {name: getattr(self, name) for name in _JOURNAL_FIELDS}
        raw["entries"] = [{name: getattr(e, name) for name in _ENTRY_FIELDS} for e in self.entries]
        return json.dumps(raw, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Journal:
        raw = json.loads(data)
        entries = tuple(Entry(**e) for e in raw.pop("entries"))
        raw["kinds"] = tuple(raw["kinds"])
        return cls(entries=entries, **raw)


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))
_JOURNAL_FIELDS = tuple(f.name for f in fields(Journal) if f.name != "entries")


def write_journal(var_dir: Path, journal: Journal) -> None:
    """Replace the journal atomically and durably (a later phase: `rolling-back`)."""
    fsio.replace_file(var_dir / JOURNAL, journal.to_json(), 0o600)


def create_journal(
    var_dir: Path,
    journal: Journal,
    *,
    after: Iterable[Path] = (),
    also: Sequence[fsio.Syncer] = (),
) -> None:
    """Write a pass's first journal in place (it must not exist), durable with `after` and
    `also` in one round of waits: its bytes, its name in VAR and everything it points at.

    No temp file and rename: their order would cost a second round before the swap. A crash
    inside the round may leave the journal unfinished (empty, cut short, zeros at its end),
    which `read_journal` tells from a damaged one: this is the only journal write that is not
    atomic, and the swap starts after the round, so an unfinished journal had touched nothing.
    """
    path = var_dir / JOURNAL
    try:
        fsio.write_new(path, journal.to_json())
    except OSError as exc:
        raise ApplyError(fsio.describe(exc, path)) from exc
    try:
        fsio.sync_all([path, var_dir, *after], also=also)
    except ReconcilerError:
        path.unlink(missing_ok=True)
        raise


_HEAD = b'{"entries":['
"""How every journal starts (`to_json`: keys sorted, compact); it ends with its only newline."""


def unfinished(data: bytes) -> bool:
    """Whether `data` is a journal whose first write a crash cut short: empty, a beginning
    without its final newline, or either followed by the zeros of blocks never written."""
    kept = data.rstrip(b"\0")
    return not kept.endswith(b"\n") and (_HEAD.startswith(kept) or kept.startswith(_HEAD))


class UnfinishedJournalError(ApplyError):
    """VAR/journal.json was cut short by a crash while its pass wrote it: that pass had touched
    no target yet (see `create_journal`), so recovery removes it (`path`) and goes on."""

    WHAT = "unfinished (its pass stopped while writing it, before it touched any target)"

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: {self.WHAT}; the next writing pass removes it")
        self.path = path


def read_journal(var_dir: Path) -> Journal | None:
    """The interrupted pass's journal, if there is one; ApplyError when it cannot be read."""
    path = var_dir / JOURNAL
    data: bytes | None = None
    try:
        data = fsio.read_safe(path, JOURNAL_LIMIT)
        if data is None:
            return None
        return Journal.from_json(data)
    except fsio.RefusedFileError as exc:
        why = exc.reason
    except OSError as exc:
        why = fsio.describe(exc, path).removeprefix(f"{path}: ")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        if data is not None and unfinished(data):
            raise UnfinishedJournalError(path) from exc
        why = f"not a journal ({type(exc).__name__})"
    # Not ours to guess: a pass may have stopped half-swapped. Nothing is applied until the
    # operator has looked; the daemon reports this at every pass and goes on running.
    raise ApplyError(
        f"{path}: {why}; a pass may have stopped half-way: check the targets "
        f"(`reconciler plan` lists what differs), then move the file aside "
        f"(mv {path} {path}.bad) and run `reconciler apply`"
    )
