"""One bucket of a CApath directory's hash links (one HASH), made as `openssl rehash` makes it.

The rules are OpenSSL 3.0's apps/rehash.c (`add_entry`, the end of `do_dir`): the bucket's files
and links are taken in the byte order of their names; a file whose certificate another file of the
bucket already holds (same SHA-1) is skipped; a link whose number is below the count of files that
need one is kept as it is, even dangling; a file without such a link gets the lowest free number;
the bucket's other links are removed. `hashlinks` decides which buckets to make.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.errors import ApplyError
from reconciler.support import fsio
from reconciler.truststore.x509info import CERT, CRL, FILE_LIMIT, Held, sha1_of

__all__ = [
    "Bucket",
    "BucketLinks",
    "MAX_COLLISIONS",
    "link_bucket",
    "link_each_certificate",
    "rehash_bucket",
]

_SUFFIX = ("", "r")
"""The link names' suffixes of the two kinds of bucket, CERT and CRL."""
_NO_ID = 0xFFFF
"""rehash's "no link yet" (~0 in an unsigned short), above every real number."""
MAX_COLLISIONS = 256
"""Files one bucket links at most (rehash's limit)."""

Bucket = tuple[int, int]
"""(kind, hash)."""


class BucketLinks:
    """A directory's hash links while a refresh changes them: name -> inode, and the names of
    hash links that are something else (never replaced)."""

    __slots__ = ("blocked", "changed", "links", "real")

    def __init__(self, real: str, links: dict[str, int], blocked: set[str]) -> None:
        self.real = real
        self.links = links
        self.blocked = blocked
        self.changed = False

    def taken(self, link: str) -> bool:
        return link in self.links or link in self.blocked

    def make(self, link: str, target: str) -> None:
        """Make `link` point at `target` (atomically). Something other than a link under that
        name is not ours to replace: ApplyError naming it (the tool would delete it)."""
        path = Path(self.real) / link
        if link in self.blocked or (os.path.lexists(path) and not path.is_symlink()):
            raise ApplyError(
                f"{path}: is not a link, where the trust store's link for {target} belongs; "
                "move it away and the next trust change links it"
            )
        fsio.replace_link(path, target)
        self.changed = True
        try:
            self.links[link] = os.lstat(path).st_ino
        except OSError:
            self.links.pop(link, None)  # gone already: whoever removed it, an event says so

    def remove(self, link: str) -> None:
        self.links.pop(link, None)
        try:
            os.unlink(f"{self.real}/{link}")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise ApplyError(fsio.describe(exc, f"{self.real}/{link}")) from exc
        self.changed = True

    def target(self, link: str) -> str | None:
        try:
            return os.readlink(f"{self.real}/{link}")
        except OSError:
            return None


def link_bucket(name: str) -> Bucket:
    """The bucket a hash link's name says it is in (`HASH.N` or `HASH.rN`)."""
    return (CRL if name[9:10] in ("r", "R") else CERT, int(name[:8], 16))


def _link_number(name: str) -> int:
    """The number a hash link's name says (strtoul of nothing is 0; an unsigned short)."""
    digits = name[10:] if name[9:10] in ("r", "R") else name[9:]
    return int(digits or "0") & 0xFFFF


def _sha1(real: str, name: str, kind: int) -> bytes:
    """SHA-1 of the one certificate (CRL) a file holds: what rehash tells duplicates apart by."""
    try:
        data = fsio.read_safe(f"{real}/{name}", FILE_LIMIT, follow=True) or b""
    except OSError:
        data = b""
    return sha1_of(data, kind) or hashlib.sha1(name.encode(), usedforsecurity=False).digest()


class _Entry:
    """One file of a bucket in the making, as rehash's HENTRY."""

    __slots__ = ("digest", "filename", "need", "old_id")

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.digest: bytes | None = None
        self.need = False
        self.old_id = _NO_ID


def rehash_bucket(
    state: BucketLinks, bucket: Bucket, names: list[str], files: Mapping[str, tuple[object, Held]]
) -> None:
    """One bucket as rehash leaves it: `names` are its links and files in byte order."""
    kind, value = bucket
    entries: list[_Entry] = []
    needed = 0
    # The SHA-1 only tells the files of one bucket apart: read only where several share one.
    several = sum(1 for name in names if name in files) > 1
    for name in names:
        digest: bytes | None = None
        if name in files:
            digest = _sha1(state.real, name, kind) if several else None
            filename, need, old_id = name, True, _NO_ID
        else:
            target = state.target(name)
            if target is None:
                continue  # gone meanwhile: rehash could not read it either
            filename, need, old_id = target, False, _link_number(name)
        found = None
        duplicate = False
        for entry in entries:
            if digest is not None and entry.digest == digest:
                duplicate = True  # "skipping duplicate certificate"
                break
            if entry.filename == filename:
                found = entry
                if not need:
                    break
        if duplicate:
            continue
        if found is None:
            if needed >= MAX_COLLISIONS:
                continue  # "hash table overflow"
            found = _Entry(filename)
            entries.append(found)
        found.old_id = min(found.old_id, old_id)
        if need and not found.need:
            found.need = True
            found.digest = digest
            needed += 1
    taken = {entry.old_id for entry in entries if entry.old_id < needed}
    next_id = 0
    for entry in entries:
        if entry.old_id < needed:
            continue  # the link exists and is used as it is
        if entry.need:
            while next_id in taken:
                next_id += 1
            state.make(f"{value:08x}.{_SUFFIX[kind]}{next_id}", entry.filename)
            taken.add(next_id)
        else:
            state.remove(f"{value:08x}.{_SUFFIX[kind]}{entry.old_id}")


def link_each_certificate(state: BucketLinks, name: str, hashes: Iterable[int]) -> None:
    """A managed file holding several certificates: a link to it in the bucket of each of their
    subject hashes, where there is none yet. OpenSSL's lookup by a subject reads that subject's
    bucket only (it then loads the whole file a link there names)."""
    for value in sorted(set(hashes)):
        number = 0
        while state.taken(link := f"{value:08x}.{number}"):
            if state.target(link) == name:
                break  # this certificate's link is there
            number += 1
        else:
            state.make(link, name)
