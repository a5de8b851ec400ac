"""The `directory` trust store's hash links, made in process the way `openssl rehash` makes them.

OpenSSL finds a CA in a CApath directory through a link `HASH.N` (`HASH.rN` for a CRL): HASH is
`X509_NAME_hash_ex()` of the certificate's subject (of the CRL's issuer) and N counts from 0; a
lookup tries 0, 1, 2... and stops at the first number that is absent. `openssl rehash DIR` reads
every file of the directory to make them. `HashLinks` makes the same links by the same rules
(OpenSSL 3.0's apps/rehash.c; tests/truststore/test_hashlinks.py holds the result to the tool's):

* a file counts when its name ends in .pem, .crt, .cer or .crl (any case) and it holds exactly
  one certificate or CRL (as OpenSSL groups PEM blocks: a certificate, a CRL and a private key in
  a row are one), else it is skipped; a symbolic link named like a hash link is a link;
* the links of one HASH form a bucket; files and links are taken in the byte order of their
  names; a file whose certificate another file of the bucket already holds (same SHA-1) is
  skipped; an existing link whose number is below the count of files needing one is kept as it
  is, even dangling (renumbering would open a gap a lookup stops at); a file without such a link
  gets the lowest free number; the bucket's other links are removed.

What differs from the tool: a FIFO or device with a certificate's name is skipped, never opened
(the tool would block on it); a private key block is counted without being decoded. And one
addition, as the backend always did after `openssl rehash`: a managed file holding several
certificates (which the tool skips) gets a link per certificate, so each is found.

Per process, `HashLinks` keeps what each file of the directory holds: by name and inode for the
reconciler's own files (every change of theirs is a new file renamed into place), by the whole
stat key for any other. Its first refresh in a process looks at every bucket; later ones only at
the buckets where a file came, went or changed: a one-entry change costs a directory listing and
a few links, whatever the size of the store.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.errors import ApplyError
from reconciler.support import fsio
from reconciler.truststore.buckets import (
    Bucket,
    BucketLinks,
    link_bucket,
    link_each_certificate,
    rehash_bucket,
)
from reconciler.truststore.x509info import (
    CERT,
    FILE_LIMIT,
    KEY_ALONE,
    Held,
    held_by,
)

__all__ = ["HashLinks"]

_EXTENSIONS = frozenset({"pem", "crt", "cer", "crl"})
_HASH_LINK = re.compile(r"([0-9A-Fa-f]{8})\.([rR]?)([0-9]*)")


class HashLinks:
    """What one process knows of a trust directory's files and links between refreshes.

    A refresh looks at the whole directory (one listing) unless it was told of every change
    since the last refresh: `saw` must have been called since, and never with None (the daemon
    calls it at every pass with the names its watch on the directory saw since the pass before
    began, which covers the refresh made in that pass). Then it looks only at those names and
    at those the pass wrote or deleted.
    """

    __slots__ = ("_armed", "_blocked", "_directory", "_files", "_links", "_seen")

    def __init__(self) -> None:
        self._directory: str | None = None
        self._files: dict[str, tuple[object, Held]] = {}
        """File name -> (identity, what it needs), as the last refresh left the directory."""
        self._links: dict[str, int] = {}
        """Hash link name -> its inode, as the last refresh left the directory."""
        self._blocked: set[str] = set()
        """Names of hash links that are something else (never replaced)."""
        self._seen: set[str] | None = None
        """Names that changed since the last refresh; None: not known (look at everything)."""
        self._armed = False
        """Whether `saw` was called since the last refresh (and so `_seen` covers it)."""

    def saw(self, names: Iterable[str] | None) -> None:
        """What changed in the directory since the previous pass began, by name (the previous
        call's changes included); None: some changes may be unknown."""
        if names is None or self._seen is None:
            self._seen = None
        else:
            self._seen.update(names)
            self._armed = True

    def forget(self) -> None:
        """Look at the whole directory at the next refresh (after a failure, say)."""
        self._seen = None

    def refresh(
        self, directory: Path, prefix: str, changed: Mapping[str, bytes | None] | None = None
    ) -> list[str]:
        """Make the links of `directory` what `openssl rehash` would make. `prefix`: the managed
        files' (whose identity is their inode); `changed`: file name -> content (None: deleted)
        of the files a pass just wrote or deleted, not read back. Returns the tool's warnings
        for skipped files; raises ApplyError when a file cannot be read (the tool fails then
        too) or a link written."""
        real = os.path.realpath(directory)
        changed = changed or {}
        written = {name: data for name, data in changed.items() if data is not None}
        known = self._directory == real
        seen = self._seen if known and self._armed else None
        self._seen = None  # until this refresh completes
        warnings: list[str] = []
        problems: list[str] = []
        if seen is None:
            affected = self._look_at_everything(real, prefix, written, known, warnings, problems)
        else:
            names = seen | changed.keys()
            affected = self._look_at(real, prefix, names, written, warnings, problems)
        if problems:
            self._directory = None  # what was found is not all there is
            raise ApplyError("; ".join(problems))
        self._directory = real
        if self._relink(real, affected):
            fsio.sync_dirs([Path(real)])
        self._seen, self._armed = set(), False
        return warnings

    def _look_at_everything(
        self,
        real: str,
        prefix: str,
        written: Mapping[str, bytes],
        known: bool,
        warnings: list[str],
        problems: list[str],
    ) -> set[Bucket]:
        """The whole directory, listed: every bucket where something differs from what was
        known (every bucket, the first time)."""
        links, found, blocked = _listing(real, prefix)
        previous = self._files if known else {}
        before = self._links if known else {}
        files: dict[str, tuple[object, Held]] = {}
        affected: set[Bucket] = set()
        for name, identity, managed in found:
            was = previous.get(name)
            if was is not None and was[0] == identity and name not in written:
                files[name] = was
                continue
            held = _describe(real, name, managed, written.get(name), warnings, problems)
            files[name] = (identity, held)
            affected.update(_buckets(held))
            if was is not None:
                affected.update(_buckets(was[1]))
        for name in previous.keys() - files.keys():
            affected.update(_buckets(previous[name][1]))
        for name, inode in links.items():
            if not known or before.get(name) != inode:
                affected.add(link_bucket(name))
        for name in before.keys() - links.keys():
            affected.add(link_bucket(name))
        self._files, self._links, self._blocked = files, links, blocked
        return affected

    def _look_at(
        self,
        real: str,
        prefix: str,
        names: Iterable[str],
        written: Mapping[str, bytes],
        warnings: list[str],
        problems: list[str],
    ) -> set[Bucket]:
        """Only `names` (the rest is as the last refresh left it): the buckets they were or are
        in."""
        affected: set[Bucket] = set()
        for name in names:
            was = self._files.pop(name, None)
            if was is not None:
                affected.update(_buckets(was[1]))
            if self._links.pop(name, None) is not None:
                affected.add(link_bucket(name))
            self._blocked.discard(name)
            kind, identity, managed = _entry(real, name, prefix)
            if kind == "link":
                assert isinstance(identity, int)
                self._links[name] = identity
                affected.add(link_bucket(name))
            elif kind == "blocked":
                self._blocked.add(name)
            elif kind == "file":
                if was is not None and was[0] == identity and name not in written:
                    self._files[name] = was
                    continue
                held = _describe(real, name, managed, written.get(name), warnings, problems)
                self._files[name] = (identity, held)
                affected.update(_buckets(held))
        return affected

    def _relink(self, real: str, affected: set[Bucket]) -> bool:
        """Every affected bucket made as rehash makes it, then the links of the managed files
        holding several certificates there; whether anything changed."""
        if not affected:
            return False
        members: dict[Bucket, list[str]] = {}
        for name in self._links:
            bucket = link_bucket(name)
            if bucket in affected:
                members.setdefault(bucket, []).append(name)
        several: list[str] = []
        for name, (_identity, held) in self._files.items():
            if held and held[0] >= 0 and (held[0], held[1]) in affected:
                members.setdefault((held[0], held[1]), []).append(name)
            elif held and held[0] < 0 and any((CERT, h) in affected for h in held[1:]):
                several.append(name)
        state = BucketLinks(real, self._links, self._blocked)
        for bucket, names in members.items():
            names.sort(key=os.fsencode)
            rehash_bucket(state, bucket, names, self._files)
        for name in sorted(several, key=os.fsencode):
            link_each_certificate(state, name, self._files[name][1][1:])
        return state.changed


def _is_hash_link_name(name: str) -> bool:
    return len(name) >= 9 and name[8] == "." and _HASH_LINK.fullmatch(name) is not None


def _wanted_file(name: str) -> bool:
    """Whether the tool reads `name` for a certificate (by its extension)."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1 :].lower() in _EXTENSIONS


def _entry(real: str, name: str, prefix: str) -> tuple[str, object, bool]:
    """What is at `name` now: ("link", inode, _), ("blocked", _, _), ("file", identity,
    managed), or ("", _, _) when nothing the links depend on."""
    path = f"{real}/{name}"
    try:
        info = os.lstat(path)
    except OSError:
        return "", None, False
    link = stat.S_ISLNK(info.st_mode)
    if _is_hash_link_name(name):
        return ("link", info.st_ino, False) if link else ("blocked", None, False)
    if not _wanted_file(name):
        return "", None, False
    if not link and name.startswith(prefix) and name.endswith(".crt"):
        return "file", info.st_ino, True
    return "file", _followed_identity(path), False


def _followed_identity(path: str) -> object:
    try:
        return fsio.stat_key(os.stat(path))  # through a link, as the tool reads it
    except OSError:
        return None  # unreadable: _describe says why


def _listing(
    real: str, prefix: str
) -> tuple[dict[str, int], list[tuple[str, object, bool]], set[str]]:
    """Of the directory `real`: its hash links (name -> inode), the files that may hold a
    certificate ((name, identity, managed)), and what else bears a hash link's name."""
    links: dict[str, int] = {}
    files: list[tuple[str, object, bool]] = []
    blocked: set[str] = set()
    try:
        with os.scandir(real) as listed:
            for entry in listed:
                name = entry.name
                link = entry.is_symlink()
                if _is_hash_link_name(name):
                    if link:
                        links[name] = entry.inode()
                    else:
                        blocked.add(name)  # never replaced: see _State.make
                elif _wanted_file(name):
                    if not link and name.startswith(prefix) and name.endswith(".crt"):
                        files.append((name, entry.inode(), True))
                    else:
                        files.append((name, _followed_identity(entry.path), False))
    except OSError as exc:
        raise ApplyError(f"trust directory {real}: cannot list it: {exc.strerror}") from exc
    return links, files, blocked


def _describe(
    real: str,
    name: str,
    managed: bool,
    content: bytes | None,
    warnings: list[str],
    problems: list[str],
) -> Held:
    """What the file `name` needs (see Held), from `content` or from the file."""
    if content is None:
        try:
            content = fsio.read_safe(f"{real}/{name}", FILE_LIMIT, follow=True)
        except fsio.RefusedFileError as exc:
            warnings.append(f"skipping {name}: {exc.reason}")
            return ()
        except OSError as exc:
            problems.append(f"{real}/{name}: cannot open file: {exc.strerror}")
            return ()
        if content is None:
            problems.append(f"{real}/{name}: cannot open file")
            return ()
    held, why = held_by(content, managed=managed)
    if why == KEY_ALONE:
        problems.append(f"{real}/{name}: {why}")
    elif why is not None:
        warnings.append(f"skipping {name}, {why}")
    return held


def _buckets(held: Held) -> Iterable[Bucket]:
    if not held:
        return ()
    if held[0] < 0:
        return [(CERT, h) for h in held[1:]]
    return [(held[0], held[1])]
