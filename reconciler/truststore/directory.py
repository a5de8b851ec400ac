"""The `directory` trust store backend: an OpenSSL CApath, its hash links made in process
(`hashlinks`) or by a `trust_refresh` command such as `openssl rehash`."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.subject_hash import subject_hash
from reconciler.errors import ApplyError
from reconciler.support import fsio
from reconciler.truststore.base import RefreshResult, TrustRefreshError, TrustStore
from reconciler.truststore.certfiles import cert_subject, file_ders, pem_cert_ders, pem_cert_digests
from reconciler.truststore.hashlinks import HashLinks


@dataclass(frozen=True, slots=True)
class TrustLinks:
    """What a process knows of its trust directory's links between passes."""

    digests: fsio.StatCache[frozenset[bytes]] = field(default_factory=fsio.StatCache)
    """The certificate digests behind each hash link, by the link's stat key (the proof)."""
    made: HashLinks = field(default_factory=HashLinks)
    """What the directory's files hold, for the links made in process."""


# What `openssl rehash` names its links: the subject hash, a dot, a collision counter.
_HASH_LINK_RE = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")
# Up to this many written entries, the proof looks up each one's links by subject hash; beyond,
# one scan of every link is cheaper than hashing each subject.
_LOOKUP_LIMIT = 64
# Distinct CAs sharing a subject hash are rare; past this many, the scan of every link decides.
_HASH_COLLISIONS_LOOKED_AT = 16


@dataclass(frozen=True, slots=True)
class DirectoryTrustStore(TrustStore):
    """Any directory used as an OpenSSL CApath. Without a refresh command, the reconciler makes
    the hash links itself, as `openssl rehash DIR` would (`hashlinks`); with one (setting
    `trust_refresh`, `openssl rehash` say), the command makes them.

    Both skip a file holding more than one certificate (the tool with a warning and exit 0);
    the backend then links each of its certificates itself, so none is silently not trusted.
    """

    link_cache: TrustLinks = field(default_factory=TrustLinks)
    """What the process knows of the links. A daemon hands every pass the same one, so a refresh
    looks only at the links where a file changed, and the proof reads only the links that did."""

    def refresh(
        self,
        removed: bool,
        timeout_s: float = 120,
        several: Sequence[Path] | None = None,
        changed: Mapping[str, bytes | None] | None = None,
    ) -> RefreshResult:
        """Make the hash links (in process, or the refresh command), then those the tool skips
        by design: every certificate of a managed file that holds several (OpenSSL's CApath
        lookup loads the whole file a link names, so a link per certificate makes each one
        found). After the command, where the caller says which files hold several, only those
        are looked at: a state of single certificates costs no scan of the store."""
        if not self.refresh_argv:
            return self._link_in_process(changed)
        result = TrustStore.refresh(self, removed, timeout_s)
        if several is None or several:
            self._link_multi_certificate_files(several)
        return result

    def settle_links(self) -> None:
        """The links as `openssl rehash` would make them, with the whole directory looked at
        (a daemon's start): the passes after it look only where their events say, so the first
        trust change does not wait for a read of every file. TrustRefreshError when one cannot
        be read or a link made (the next trust change looks at everything again)."""
        if not self.refresh_argv and self.trust_dir.is_dir():
            self._link_in_process(None)

    def _link_in_process(self, changed: Mapping[str, bytes | None] | None) -> RefreshResult:
        started = time.monotonic()
        try:
            warnings = self.link_cache.made.refresh(self.trust_dir, self.prefix, changed)
        except ApplyError as exc:
            self.link_cache.made.forget()
            elapsed = round((time.monotonic() - started) * 1000)
            failed = RefreshResult((), 1, elapsed, str(exc)[-4096:])
            raise TrustRefreshError(f"trust store links (made in process): {exc}", failed) from exc
        elapsed = round((time.monotonic() - started) * 1000)
        return RefreshResult((), 0, elapsed, "\n".join(warnings)[-4096:])

    def _link_multi_certificate_files(self, several: Sequence[Path] | None) -> None:
        links = self._hash_links()
        linked = {self._link_key(os.readlink(e.path)) for e in links if e.is_symlink()}
        taken = {entry.name for entry in links}
        paths = self.managed_files().values() if several is None else several
        for path in paths:
            if path.name in linked:
                continue
            ders = file_ders(path)
            if len(ders) < 2:
                continue  # one certificate rehash did not link: the check below reports it
            for der in ders:
                name_hash = subject_hash(der)
                counter = 0
                while f"{name_hash}.{counter}" in taken:
                    counter += 1
                link = self.trust_dir / f"{name_hash}.{counter}"
                try:
                    os.symlink(path.name, link)
                except OSError as exc:
                    raise ApplyError(fsio.describe(exc, link)) from exc
                taken.add(link.name)

    def missing_files_after_refresh(self, files: Sequence[Path]) -> list[str]:
        """Here it is enough that a hash link names each file: rehash links a file only when it
        holds exactly one certificate it could read.

        A pass that wrote a few entries looks where rehash puts each one's link (`HASH.0`,
        `HASH.1`, ... by the subject hash): a few readlinks, whatever the size of the store. What
        is not found there (or a pass that wrote many) is looked for among every link."""
        if len(files) <= _LOOKUP_LIMIT:
            files = [path for path in files if not self._linked_by_hash(path)]
            if not files:
                return []
        return self._missing_among_all_links(files)

    def _linked_by_hash(self, path: Path) -> bool:
        try:
            ders = pem_cert_ders(path.read_bytes())
        except OSError:
            return False
        if len(ders) != 1:
            return False  # rehash links no such file: the scan of every link says what is missing
        try:
            name_hash = subject_hash(ders[0])
        except ValueError:
            return False
        wanted = self._link_key(str(path))
        # rehash numbers the links of one hash from 0, without gaps.
        for counter in range(_HASH_COLLISIONS_LOOKED_AT):
            try:
                target = os.readlink(self.trust_dir / f"{name_hash}.{counter}")
            except OSError:
                return False
            if self._link_key(target) == wanted:
                return True
        return False

    def _hash_links(self) -> list[os.DirEntry[str]]:
        """The entries of TRUST_DIR named as rehash names its links (`HASH.N`)."""
        try:
            entries = list(os.scandir(self.trust_dir))
        except OSError as exc:
            raise ApplyError(f"trust directory {self.trust_dir}: cannot list it: {exc}") from exc
        return [entry for entry in entries if _HASH_LINK_RE.match(entry.name)]

    def _missing_among_all_links(self, files: Sequence[Path]) -> list[str]:
        linked: set[str] = set()
        for entry in self._hash_links():
            if entry.is_symlink():
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    continue
                linked.add(self._link_key(target))
        missing: list[str] = []
        present: set[bytes] | None = None
        for path in files:
            if self._link_key(str(path)) not in linked or not path.exists():
                ders = file_ders(path)
                if not ders:
                    missing.append(str(path))
                    continue
                # A certificate another file already holds is linked once (rehash skips the
                # duplicate): it is installed if some link leads to it.
                if present is None:
                    present = self._present_digests()
                missing += [
                    cert_subject(der) for der in ders if hashlib.sha256(der).digest() not in present
                ]
        return missing

    def _link_key(self, target: str) -> str:
        """A link target (or a file) as a comparable key: the bare name for a file in TRUST_DIR
        (rehash links by bare name: no path work in the common case), else the absolute path."""
        if "/" not in target:
            return target
        full = os.path.normpath(os.path.join(self.trust_dir, target))
        directory, name = os.path.split(full)
        return name if directory == os.path.normpath(self.trust_dir) else full

    def _present_digests(self) -> set[bytes]:
        present: set[bytes] = set()
        for entry in self._hash_links():
            try:
                # Through the link: a re-pointed link shows a different inode, so the cache
                # never answers for the wrong certificate.
                info = os.stat(entry.path)
                cached = self.link_cache.digests.get(entry.path, info)
                if cached is not None:
                    present |= cached
                    continue
                read_at = fsio.now_ns()
                data = Path(entry.path).read_bytes()
            except OSError:
                continue  # a dangling link trusts nothing: its certificate counts as missing
            digests = frozenset(pem_cert_digests(data))
            self.link_cache.digests.put(entry.path, info, digests, read_at)
            present |= digests
        return present
