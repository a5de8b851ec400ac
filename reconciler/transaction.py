"""Staging, journal, swap, rollback, recovery and generations: a pass applies all of it or none.

The protocol, in the order a pass runs it (VAR is `var_dir`, 0700; every file in it 0600):

1. **lock**    `VAR/lock` is flocked for the whole pass; it holds the holder's PID.
2. **stage**   every new target content goes to `VAR/txn/ID/new.bin` (kept with the generation),
               and the current content of every target the pass replaces or deletes to
               `VAR/txn/ID/old.bin` (the previous generation, what a rollback restores); one
               file each, entries refer to `FILE:OFFSET:LENGTH`.
3. **journal** `VAR/journal.json` names the whole change set, phase `prepared`. Its temp file, the
               backups and the staging directories are fsynced together, then it is renamed and
               VAR fsynced. From here on a crash is recoverable. (`new.bin` need not be durable:
               recovery undoes a prepared pass, it never redoes the swap from it.)
4. **swap**    every new content is written to a temp file (0600 until its mode is set) next to
               its target, all fsynced together, then renamed over the targets one after
               another (deletes are unlinks). Only this run of renames sees a mixed set.
5. **swapped** the journal's phase becomes `swapped` once the target directories are fsynced: the
               files are done, refresh and hooks pending.
6. (the caller refreshes the trust store, runs hooks and verifies)
7. **commit**  `VAR/txn/ID` moves to `VAR/generations/ID` (the last KEEP_GENERATIONS are kept)
               and the journal is removed.

A failure after step 4 started (a write error, a failed hook or verification) sets phase
`rolling-back`, restores every target from `old.bin` (deleting those that did not exist), and
removes the journal once the rollback hooks ran.

**Recovery** at the start of every writing command, before anything else, by the journal's phase:

* no journal: any `VAR/txn/*` is a pass that never reached its journal: deleted; targets untouched.
* `prepared`: the swap may be partial and no hook has run, so the old generation is what runs:
  **undo** (restore every target from `old.bin`). The desired state is applied afresh by the next
  pass.
* `swapped`: the new files all stand but their hooks may not have run: **complete** (refresh,
  hooks, verification, commit; or roll back if they fail).
* `rolling-back`: **finish the rollback** (restore again, run the rollback hooks).

Restoring and swapping are idempotent, so a crash during recovery is recovered the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from reconciler import fsio
from reconciler.core.plan import Change, Plan, digest
from reconciler.errors import ApplyError, LockHeldError

Phase = Literal["prepared", "swapped", "rolling-back"]

JOURNAL = "journal.json"
STAGING = "txn"
GENERATIONS = "generations"
LOCK = "lock"
KEEP_GENERATIONS = 5
NEW = "new.bin"
"""Staged new contents of a pass, concatenated (kept with its generation)."""
LINK = "link:"
"""An Entry.backup that starts with it records a symbolic link (its target follows), not bytes."""
OLD = "old.bin"
"""The previous contents of every target a pass replaces or deletes: what a rollback restores."""


def crashpoint(step: str) -> None:
    """Test-only: RECONCILER_TEST_CRASH_AT=STEP stops the process dead here (the crash sweep)."""
    if os.environ.get("RECONCILER_TEST_CRASH_AT") == step:
        os._exit(86)


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


TARGET_DIRS = ("data", "nginx")


def ensure_target_dirs(root: Path) -> None:
    """ROOT/data and ROOT/nginx, created 0755 when missing (a fresh volume); ApplyError naming
    ROOT when ROOT itself is missing (a wrong `root` setting is not ours to create)."""
    if not root.is_dir():
        what = "is not a directory" if os.path.lexists(root) else "does not exist"
        raise ApplyError(f"ROOT {root}: {what} (setting `root`); nothing was changed")
    created = False
    for name in TARGET_DIRS:
        directory = root / name
        if os.path.lexists(directory):
            continue
        try:
            directory.mkdir(mode=0o755)
            directory.chmod(0o755)  # whatever the umask: nginx and the services read it
        except OSError as exc:
            raise ApplyError(f"cannot create {fsio.describe(exc, directory)}") from exc
        created = True
    if created:
        try:
            fsio.fsync_dir(root)
        except OSError as exc:
            raise ApplyError(fsio.describe(exc, root)) from exc


JOURNAL_LIMIT = 256 << 20
"""A journal names every target of a pass (thousands of trust entries): far under this."""


class Transaction:
    """One pass's change set on disk. Create with `prepare`, or `load` after a crash."""

    def __init__(
        self, var_dir: Path, journal: Journal, contents: dict[str, bytes] | None = None
    ) -> None:
        self.var_dir = var_dir
        self.journal = journal
        self._contents = contents or {}
        self._blobs: dict[str, bytes] = {}

    @property
    def dir(self) -> Path:
        return self.var_dir / STAGING / self.journal.id

    # -- step 2 and 3 ------------------------------------------------------------------------

    @classmethod
    def prepare(cls, var_dir: Path, plan: Plan) -> Transaction:
        """Stage new contents and back up old ones, then write the journal (phase `prepared`).

        On any I/O error the staging area is removed and ApplyError names the path: no target
        has been touched yet.
        """
        txn_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)
        directory = var_dir / STAGING / txn_id
        try:
            fsio.ensure_private_dir(var_dir)
            fsio.ensure_private_dir(directory)
            entries = _stage(directory, plan.changes)
            crashpoint("staged")
            journal = Journal(
                id=txn_id,
                revision=plan.revision,
                phase="prepared",
                kinds=tuple(plan.kinds),
                trust_changed=any(c.kind == "trust" for c in plan.changes),
                trust_removed=any(c.kind == "trust" and c.action == "delete" for c in plan.changes),
                started=datetime.now(UTC).isoformat(),
                entries=tuple(entries),
            )
            contents = {
                c.path: c.target.content
                for c in plan.changes
                if c.target is not None and c.target.content is not None
            }
            txn = cls(var_dir, journal, contents)
            # Backups must be durable before the journal points at them (recovery restores them);
            # staged new copies need not be: recovery never redoes a swap, it undoes one.
            txn._write_journal(after=[directory / OLD, directory, var_dir / STAGING])
        except (OSError, ApplyError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, ApplyError):
                raise
            raise ApplyError(fsio.describe(exc, getattr(exc, "filename", None) or var_dir)) from exc
        crashpoint("journal-prepared")
        return txn

    def _write_journal(self, *, after: Iterable[Path] = ()) -> None:
        """Write the journal atomically, durable only once everything in `after` is.

        `after` (files and directories this journal depends on) is fsynced in the same batch as
        the journal's temp file, and the rename comes after the whole batch: one round of
        waits instead of two, with the same order on disk.
        """
        path = self.var_dir / JOURNAL
        try:
            tmp = fsio.write_temp(
                self.var_dir, JOURNAL, self.journal.to_json(), 0o600, None, sync=False
            )
        except OSError as exc:
            raise ApplyError(fsio.describe(exc, path)) from exc
        try:
            fsio.sync_all([tmp, *after])
            fsio.rename_into(tmp, path)
        except ApplyError:
            tmp.unlink(missing_ok=True)
            raise
        fsio.sync_dirs([self.var_dir])

    def _set_phase(self, phase: Phase, *, after: Iterable[Path] = ()) -> None:
        self.journal = replace(self.journal, phase=phase)
        self._write_journal(after=after)

    # -- step 4 and 5 ------------------------------------------------------------------------

    def swap(self) -> None:
        """Put every staged target in place (or delete it); then phase `swapped`.

        Every new file is first written as a temporary file next to its target and all of them
        are fsynced together; only then do the renames begin, so the window in which the
        targets are a mixed set is a run of renames, and a crash inside it is undone.
        """
        temps: dict[str, Path] = {}
        try:
            for entry in self.journal.entries:
                if entry.staged is not None:
                    assert entry.mode is not None
                    target = Path(entry.path)
                    data = self._content(entry)
                    _ensure_target_dir(target.parent)
                    temps[entry.path] = fsio.write_temp(
                        target.parent, target.name, data, entry.mode, entry.gid, sync=False
                    )
            fsio.fsync_files(temps.values())
            for number, entry in enumerate(self.journal.entries):
                target = Path(entry.path)
                if entry.staged is None:
                    fsio.remove_file(target, sync_dir=False)
                else:
                    fsio.rename_into(temps[entry.path], target)
                    del temps[entry.path]  # renamed: no longer ours to clean up
                if number == 0:
                    crashpoint("swap-first")
        except OSError as exc:
            raise ApplyError(fsio.describe(exc, getattr(exc, "filename", None) or "?")) from exc
        finally:
            for leftover in temps.values():
                leftover.unlink(missing_ok=True)
        crashpoint("swap-done")
        # The renames are durable (their directories synced) before the journal says swapped.
        self._set_phase("swapped", after={Path(e.path).parent for e in self.journal.entries})
        crashpoint("swapped")

    def _content(self, entry: Entry) -> bytes:
        """The new content: from the plan in memory, or from staging for a loaded journal."""
        if entry.path in self._contents:
            return self._contents[entry.path]
        assert entry.staged is not None
        return self._read(entry.staged)

    def _read(self, ref: str) -> bytes:
        """A staged content by its reference, `FILE:OFFSET:LENGTH` (see `_stage`)."""
        name, offset, length = ref.rsplit(":", 2)
        if name not in self._blobs:
            path = self.dir / name
            try:
                self._blobs[name] = path.read_bytes()
            except OSError as exc:
                raise ApplyError(fsio.describe(exc, path)) from exc
        start = int(offset)
        return self._blobs[name][start : start + int(length)]

    # -- rollback ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Put the previous generation back (phase `rolling-back` until `finish_rollback`).

        Targets that already hold their previous content are left alone: a swap that failed
        half-way (a full disk) must not need to write the files it never reached.
        """
        todo = [entry for entry in reversed(self.journal.entries) if not _holds(entry)]
        if not todo:
            return  # nothing swapped yet, or all back: no journal write (a full disk, say)
        if self.journal.phase != "rolling-back":
            self._set_phase("rolling-back")
        touched: list[Path] = []
        for entry in todo:
            target = Path(entry.path)
            if entry.backup is None:
                fsio.remove_file(target, sync_dir=False)
            elif entry.backup.startswith(LINK):
                fsio.replace_link(target, entry.backup.removeprefix(LINK))
            else:
                data = self._read(entry.backup)
                mode = entry.before_mode if entry.before_mode is not None else 0o600
                fsio.replace_file(target, data, mode, entry.before_gid, sync_dir=False)
            touched.append(target.parent)
        fsio.sync_dirs(touched)
        crashpoint("restored")

    def finish_rollback(self) -> None:
        """Forget the failed pass: the journal and its staging go."""
        self._remove_journal()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- step 7 ------------------------------------------------------------------------------

    def commit(self) -> None:
        """Drop the journal (the commit point), then keep this pass as a generation (bounded).

        A crash between the two leaves a staging directory holding its own journal copy: the
        next start files it under generations instead of deleting it.
        """
        copy = self.dir / JOURNAL
        fsio.replace_file(copy, self.journal.to_json(), 0o600)
        self._remove_journal()
        crashpoint("committing")
        _keep_generation(self.var_dir, self.dir)

    def _remove_journal(self) -> None:
        fsio.remove_file(self.var_dir / JOURNAL)

    @classmethod
    def load(cls, var_dir: Path) -> Transaction | None:
        """The interrupted pass, if the journal says there is one."""
        path = var_dir / JOURNAL
        try:
            data = fsio.read_safe(path, JOURNAL_LIMIT)
            if data is None:
                return None
            return cls(var_dir, Journal.from_json(data))
        except fsio.RefusedFileError as exc:
            why = exc.reason
        except OSError as exc:
            why = fsio.describe(exc, path).removeprefix(f"{path}: ")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            why = "empty" if not data else f"not a journal ({type(exc).__name__})"
        # Not ours to guess: a pass may have stopped half-swapped. Nothing is applied until the
        # operator has looked; the daemon reports this at every pass and goes on running.
        raise ApplyError(
            f"{path}: {why}; a pass may have stopped half-way: check the targets "
            f"(`reconciler plan` lists what differs), then move the file aside "
            f"(mv {path} {path}.bad) and run `reconciler apply`"
        )


def _stage(directory: Path, changes: Sequence[Change]) -> list[Entry]:
    """Write every new content to `NEW` and every current one to `OLD`, one file each.

    Two files rather than one per target: with thousands of trust entries, creating files was
    most of a cold pass, and the backups are made durable by one fsync. Entries refer to their
    bytes as `FILE:OFFSET:LENGTH`.
    """
    new, old = bytearray(), bytearray()
    entries = []
    for change in changes:
        target = Path(change.path)
        staged = None
        if change.target is not None:
            assert change.target.content is not None
            staged = f"{NEW}:{len(new)}:{len(change.target.content)}"
            new += change.target.content
        backup = None
        before_mode = before_gid = None
        before_sha = None
        current = fsio.read_bytes(target)
        special = fsio.special_file(target) if current is None else None
        if special is not None:
            # Not ours to read or delete (a FIFO would block a reader; a directory may hold
            # someone's files): the pass fails before anything is swapped, naming the path.
            raise ApplyError(
                f"{target}: is {special} where a {change.kind} target file belongs; "
                "nothing was changed: move it away and the next pass writes the file"
            )
        if current is None and os.path.islink(target):
            # Someone put a link where a target belongs (drift): a rollback puts the link back.
            backup = LINK + os.readlink(target)
        elif current is not None:
            info = target.stat()
            before_mode, before_gid = info.st_mode & 0o7777, info.st_gid
            backup = f"{OLD}:{len(old)}:{len(current)}"
            old += current
            before_sha = digest(current)
        entries.append(
            Entry(
                path=change.path,
                kind=change.kind,
                action=change.action,
                cause=change.cause,
                staged=staged,
                backup=backup,
                mode=change.mode,
                gid=change.target.gid if change.target else None,
                before_mode=before_mode,
                before_gid=before_gid,
                before_sha256=before_sha,
                after_sha256=change.after_sha256,
                secret=bool(change.target and change.target.secret),
            )
        )
    fsio.write_new(directory / NEW, bytes(new))
    fsio.write_new(directory / OLD, bytes(old))
    return entries


def prune_generations(var_dir: Path, keep: int = KEEP_GENERATIONS) -> None:
    generations = var_dir / GENERATIONS
    try:
        names = sorted(p.name for p in generations.iterdir())
    except OSError:
        return
    for name in names[:-keep] if keep else names:
        shutil.rmtree(generations / name, ignore_errors=True)


def _keep_generation(var_dir: Path, staging: Path) -> None:
    generations = var_dir / GENERATIONS
    fsio.ensure_private_dir(generations)
    os.replace(staging, generations / staging.name)
    fsio.fsync_dir(generations)
    prune_generations(var_dir)


def remove_orphan_staging(var_dir: Path, keep: str | None) -> list[Path]:
    """Resolve staging directories no journal refers to: a committed pass (it holds its journal
    copy) becomes a generation; one that never wrote its journal is deleted, untouched targets."""
    removed: list[Path] = []
    try:
        children = list((var_dir / STAGING).iterdir())
    except OSError:
        return removed
    for child in children:
        if child.name == keep:
            continue
        if (child / JOURNAL).is_file():
            _keep_generation(var_dir, child)
        else:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def _holds(entry: Entry) -> bool:
    """Whether the target already is as it was before the pass (its previous generation)."""
    path, sha256 = Path(entry.path), entry.before_sha256
    mode, gid = entry.before_mode, entry.before_gid
    if entry.backup is not None and entry.backup.startswith(LINK):
        return path.is_symlink() and os.readlink(path) == entry.backup.removeprefix(LINK)
    try:
        content = fsio.read_bytes(path)
    except OSError:
        return False
    if content is None:
        return sha256 is None and not os.path.lexists(path)
    if sha256 is None or digest(content) != sha256:
        return False
    info = path.stat()
    return (mode is None or info.st_mode & 0o7777 == mode) and (gid is None or info.st_gid == gid)


class RootLock:
    """An exclusive flock on VAR/lock: one reconciler changes a ROOT at a time."""

    def __init__(self, var_dir: Path) -> None:
        self.path = var_dir / LOCK
        self._fd: int | None = None
        self._released_as = f"released {os.getpid()} {secrets.token_hex(8)} "
        self._releases = 0
        self.undisturbed = False
        """Set at each acquire: True when this lock's own last release is the last thing that
        happened to the lock file, so nobody (a `reconciler apply`, a process that crashed)
        held it in between. What this process knows of ROOT is then still all there is."""

    def acquire(self, timeout_s: float) -> None:
        fsio.ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    who = f"process {holder}" if holder else "another process"
                    raise LockHeldError(
                        f"{self.path}: held by {who} for over {timeout_s:g} s; "
                        "another reconciler is changing this ROOT"
                    ) from None
                time.sleep(delay)  # polling a lock held by another process: no event to wait on
                delay = min(delay * 2, 0.2)
        self._fd = fd
        try:
            self.undisturbed = self._releases > 0 and os.pread(fd, 64, 0) == self._marker()
        except OSError:
            self.undisturbed = False
        try:
            # Best effort: the PID only makes the waiter's message better. A full var_dir must
            # not leave us holding a lock nobody can release (a flock belongs to the open file).
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            self._releases += 1
            try:
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, self._marker(), 0)
            except OSError:
                pass  # the next acquire then finds no marker and trusts nothing it knew
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def _marker(self) -> bytes:
        """What this lock's last release wrote into the lock file."""
        return f"{self._released_as}{self._releases}".encode()

    @contextmanager
    def held(self, timeout_s: float) -> Iterator[None]:
        self.acquire(timeout_s)
        try:
            yield
        finally:
            self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _ensure_target_dir(directory: Path) -> None:
    """ROOT/data and ROOT/nginx are created 0755 on a fresh ROOT (ROOT itself must exist)."""
    if not directory.is_dir():
        directory.mkdir(mode=0o755)
        # Whatever the umask (the systemd unit's is 0077): nginx and the SMTP server read here.
        os.chmod(directory, 0o755)  # noqa: S103
