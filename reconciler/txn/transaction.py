"""The apply protocol: stage, journal, swap, roll back, commit; a pass applies all of it or none.

The protocol, in the order a pass runs it (VAR is `var_dir`, 0700; every file in it 0600):

1. **lock**    `VAR/lock` is flocked for the whole pass; it holds the holder's PID.
2. **stage**   every new target content goes to `VAR/txn/ID/new.bin` (kept with the generation),
               and the current content of every target the pass replaces or deletes to
               `VAR/txn/ID/old.bin` (the previous generation, what a rollback restores); one
               file each, entries refer to `FILE:OFFSET:LENGTH`. Every new content is also
               written to a temp file (0600 until its mode is set) next to its target.
3. **journal** `VAR/journal.json` names the whole change set, phase `prepared`. It is written in
               place, and it, VAR, the backups, the staging directories and the targets' temp
               files are fsynced together. From here on a crash is recoverable. (`new.bin` need
               not be durable: recovery never redoes a swap from it.)
4. **swap**    the temp files are renamed over the targets one after another (deletes are
               unlinks). Only this run of renames sees a mixed set.
5. **swapped** the target directories are fsynced: the files are done, refresh and hooks pending.
               The journal is not written again: the targets themselves say the swap finished.
6. (the caller refreshes the trust store, runs hooks and verifies)
7. **commit**  `VAR/txn/ID` moves to `VAR/generations/ID` (the last KEEP_GENERATIONS are kept)
               and the journal is removed.

A failure after step 4 started (a write error, a failed hook or verification) sets phase
`rolling-back`, restores every target from `old.bin` (deleting those that did not exist), and
removes the journal once the rollback hooks ran.

**Recovery** at the start of every writing command, before anything else, by the journal's phase:

* no journal, or an unfinished one (a crash while it was first written: see
  `journal.create_journal`): any `VAR/txn/*` is a pass that never reached its journal: deleted,
  with the temp files next to the targets and the unfinished journal; targets untouched.
* `prepared`, and every target holds its new content, mode and group: the swap finished (step 5)
  but the hooks may not have run: **complete** (refresh, hooks, verification, commit; or roll
  back if they fail). Journals of earlier versions say `swapped` here.
* `prepared` otherwise: the swap may be partial and no hook has run, so the old generation is
  what runs: **undo** (restore every target from `old.bin`). The desired state is applied
  afresh by the next pass.
* `rolling-back`: **finish the rollback** (restore again, run the rollback hooks).

Restoring and swapping are idempotent, so a crash during recovery is recovered the same way.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from reconciler.core.layout import RootLayout
from reconciler.core.plan import Plan
from reconciler.core.timefmt import now_rfc3339
from reconciler.errors import ApplyError, ReconcilerError
from reconciler.support import confined, fsio
from reconciler.support.confined import ConfinedDir, ConfinedDirs
from reconciler.txn.journal import (
    JOURNAL,
    LINK,
    OLD,
    OVERSIZED,
    Entry,
    Journal,
    Phase,
    create_journal,
    read_journal,
    write_journal,
)
from reconciler.txn.lock import crashpoint
from reconciler.txn.staging import (
    STAGING,
    holds_new,
    holds_previous,
    keep_generation,
    keep_secrets_redacted,
    stage,
)


class Transaction:
    """One pass's change set on disk. Create with `prepare`, or `load` after a crash."""

    def __init__(
        self,
        var_dir: Path,
        journal: Journal,
        temps: dict[str, str] | None = None,
        *,
        root: Path | None = None,
    ) -> None:
        self.var_dir = var_dir
        self.journal = journal
        self._temps = temps or {}
        """Target -> its new content, written next to it by `prepare` (none for a loaded one)."""
        self._blobs: dict[str, bytes] = {}
        self._confined = (root,) if root is not None else ()
        """Where no link is followed below: targets under ROOT are reached one directory at a
        time, so a link planted at ROOT/data (or data/secrets) is refused, never written
        through; other targets' directories (the trust store's) are configured."""

    @property
    def dir(self) -> Path:
        return self.var_dir / STAGING / self.journal.id

    # -- step 2 and 3 ------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls,
        var_dir: Path,
        plan: Plan,
        *,
        root: Path | None = None,
        also: Sequence[fsio.Syncer] = (),
    ) -> Transaction:
        """Stage new contents, back up old ones and write the new contents next to their targets,
        then write the journal (phase `prepared`); `also` runs in the journal's fsync batch.

        On any I/O error the staging area and the temp files are removed and ApplyError names
        the path: no target has been touched yet.
        """
        txn_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)
        directory = var_dir / STAGING / txn_id
        try:
            fsio.ensure_private_dir(var_dir, configured=True)
            fsio.ensure_private_dir(var_dir / STAGING)
            fsio.ensure_private_dir(directory)
            with ConfinedDirs((root,) if root is not None else ()) as dirs:
                temps: dict[str, tuple[ConfinedDir, str]] = {}
                try:
                    entries = stage(directory, plan.changes, dirs, plan.read_limit)
                    for change in plan.changes:
                        target = change.target
                        if target is not None and target.content is not None:
                            path = Path(change.path)
                            # ROOT/data and ROOT/nginx are made 0755 on a fresh ROOT, whatever
                            # the umask: nginx and the services read there.
                            where = dirs.of(path.parent, create_mode=0o755)
                            name = where.write_temp(
                                path.name, target.content, target.mode, target.gid
                            )
                            temps[change.path] = (where, name)
                    crashpoint("staged")
                    names = {path: name for path, (_, name) in temps.items()}
                    txn = cls(var_dir, _journal(txn_id, plan, entries), names, root=root)
                    # Backups must be durable before the journal points at them (recovery
                    # restores them), and the temp files before the swap renames them; staged
                    # new copies need not be: recovery never redoes a swap.
                    create_journal(
                        var_dir,
                        txn.journal,
                        after=[directory / OLD, directory, var_dir / STAGING],
                        also=(*also, *confined.syncers(files=temps.values())),
                    )
                except BaseException:
                    for where, name in temps.values():
                        with contextlib.suppress(OSError):
                            where.unlink(name)
                    raise
        except (OSError, ReconcilerError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, ReconcilerError):
                raise
            raise ApplyError(fsio.describe(exc, getattr(exc, "filename", None) or var_dir)) from exc
        crashpoint("journal-prepared")
        return txn

    # -- step 4 and 5 ------------------------------------------------------------------------

    def swap(
        self, *, done: Callable[[], object] | None = None, also: Sequence[fsio.Syncer] = ()
    ) -> None:
        """Put every staged target in place (or delete it), durably; the journal stays as it is.

        Every new file was written and made durable next to its target by `prepare`, so the
        window in which the targets are a mixed set is a run of renames, and a crash inside it
        is undone. `done` runs right after the renames (to record them), and `also` with the
        fsyncs that make them durable (to make that record durable with them)."""
        with ConfinedDirs(self._confined) as dirs:
            try:
                for number, entry in enumerate(self.journal.entries):
                    target = Path(entry.path)
                    if entry.staged is None:
                        _remove(dirs, target)
                    else:
                        dirs.of(target.parent).rename(self._temps[entry.path], target.name)
                        del self._temps[entry.path]  # renamed: no longer ours to clean up
                    if number == 0:
                        crashpoint("swap-first")
            except OSError as exc:
                path = getattr(exc, "filename", None) or "?"
                raise ApplyError(fsio.describe(exc, path)) from exc
            finally:
                for path, name in self._temps.items():
                    with contextlib.suppress(OSError):
                        dirs.of(Path(path).parent).unlink(name)
                self._temps.clear()
            crashpoint("swap-done")
            if done is not None:
                done()
            fsio.sync_all((), also=(*also, *confined.syncers(directories=dirs.opened())))
        crashpoint("swapped")

    def stopped_at(self) -> Phase:
        """Where the interrupted pass stopped: its journal's phase, but `swapped` for a `prepared`
        pass whose every target holds its new content, mode and group (a deleted one gone)."""
        if self.journal.phase == "prepared":
            with ConfinedDirs(self._confined) as dirs:
                if all(holds_new(entry, dirs) for entry in self.journal.entries):
                    return "swapped"
        return self.journal.phase

    def _staged_bytes(self, ref: str) -> bytes:
        """A staged content by its reference, `FILE:OFFSET:LENGTH` (see `staging.stage`)."""
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
        with ConfinedDirs(self._confined) as dirs:
            try:
                self._restore(dirs)
            except OSError as exc:
                path = getattr(exc, "filename", None) or "?"
                raise ApplyError(fsio.describe(exc, path)) from exc
        crashpoint("restored")

    def _restore(self, dirs: ConfinedDirs) -> None:
        entries = reversed(self.journal.entries)
        todo = [entry for entry in entries if not holds_previous(entry, dirs)]
        if not todo:
            return  # nothing swapped yet, or all back: no journal write (a full disk, say)
        # Loaded after a crash, the backups are new to this process: keep their secrets
        # redacted before the rollback hooks can print them.
        keep_secrets_redacted(
            [
                (entry.path, self._staged_bytes(entry.backup))
                for entry in self.journal.entries
                if entry.backup is not None and entry.backup.startswith(OLD)
            ]
        )
        if self.journal.phase != "rolling-back":
            self.journal = replace(self.journal, phase="rolling-back")
            write_journal(self.var_dir, self.journal)
        for entry in todo:
            target = Path(entry.path)
            if entry.backup is None or entry.backup.startswith(OVERSIZED):
                _remove(dirs, target)  # nothing was there, or garbage that was not kept
                continue
            where = dirs.of(target.parent, create_mode=_dir_mode(target.parent, self._confined))
            if entry.backup.startswith(LINK):
                where.symlink(entry.backup.removeprefix(LINK), target.name)
            else:
                data = self._staged_bytes(entry.backup)
                mode = entry.before_mode if entry.before_mode is not None else 0o600
                where.replace(target.name, data, mode, entry.before_gid)
        confined.fsync_dirs(dirs.opened())

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
        keep_generation(self.var_dir, self.dir)

    def _remove_journal(self) -> None:
        fsio.remove_file(self.var_dir / JOURNAL)

    @classmethod
    def load(cls, var_dir: Path, *, root: Path | None = None) -> Transaction | None:
        """The interrupted pass, if the journal says there is one (`root`: as for `prepare`)."""
        journal = read_journal(var_dir)
        return None if journal is None else cls(var_dir, journal, root=root)


def _dir_mode(directory: Path, roots: Iterable[Path]) -> int:
    """The mode a restore creates a missing target directory with: the credentials' copies are
    listed by their owner only (the next pass sets the configured mode); nginx and the services
    read the others."""
    secret = any(directory == RootLayout(root).secrets for root in roots)
    return 0o700 if secret else 0o755


def _journal(txn_id: str, plan: Plan, entries: Sequence[Entry]) -> Journal:
    """The journal of a pass about to swap `plan`'s changes (phase `prepared`)."""
    return Journal(
        id=txn_id,
        revision=plan.revision,
        phase="prepared",
        kinds=tuple(plan.kinds),
        trust_changed=any(c.kind == "trust" for c in plan.changes),
        trust_removed=any(c.kind == "trust" and c.action == "delete" for c in plan.changes),
        started=now_rfc3339(fraction=True),
        entries=tuple(entries),
    )


def _remove(dirs: ConfinedDirs, target: Path) -> None:
    """Delete a target (a file or a link, never what it points to); its directory being gone
    leaves nothing to delete."""
    try:
        where = dirs.of(target.parent)
    except FileNotFoundError:
        return
    where.unlink(target.name)
