"""Apply adapter for trust entries: list the managed files, refresh the OS store, prove the result.

The transaction layer writes and deletes `TRUST_DIR/PREFIX+NAME.crt` itself (atomically, with the
other targets of a pass). This module owns what is specific to each operating system:
which files in TRUST_DIR are ours, the command that turns them into the store the TLS
libraries read, and the check that every desired certificate really is in that store afterwards.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler import fsio
from reconciler.core.subject_hash import subject_hash
from reconciler.errors import ApplyError
from reconciler.hooks import run_command
from reconciler.settings import Settings

__all__ = [
    "DEFAULT_DEBIAN_BUNDLE",
    "DEFAULT_RHEL_BUNDLE",
    "RefreshResult",
    "TrustRefreshError",
    "TrustStore",
    "DebianTrustStore",
    "RhelTrustStore",
    "DirectoryTrustStore",
    "trust_store_from_settings",
    "managed_paths",
    "pem_cert_ders",
    "pem_cert_digests",
]

DEFAULT_DEBIAN_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_RHEL_BUNDLE = Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")

_UPDATE_CA_CERTIFICATES = "update-ca-certificates"
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)
# What `openssl rehash` names its links: the subject hash, a dot, a collision counter.
_HASH_LINK_RE = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")
# Up to this many written entries, the proof looks up each one's links by subject hash; beyond,
# one scan of every link is cheaper than hashing each subject.
_LOOKUP_LIMIT = 64
# Distinct CAs sharing a subject hash are rare; past this many, the scan of every link decides.
_HASH_COLLISIONS_LOOKED_AT = 16


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """One run of the refresh command, for the operational log and the audit log."""

    argv: tuple[str, ...]
    exit_code: int | None
    """None when the command was killed after its timeout."""
    duration_ms: int
    output_tail: str
    """The last 4 KiB of stdout and stderr together."""


class TrustRefreshError(ApplyError):
    """The refresh command failed or timed out; `result` holds its exit code and output."""

    def __init__(self, message: str, result: RefreshResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class TrustStore:
    """What every backend shares: the managed files and running the refresh command."""

    trust_dir: Path
    prefix: str
    refresh_argv: tuple[str, ...]

    backend: ClassVar[str] = ""

    # -- the managed files ------------------------------------------------------------------

    def managed_files(self) -> dict[str, Path]:
        """NAME -> path for each `PREFIX+NAME.crt` in TRUST_DIR (see `managed_files`)."""
        return managed_files(self.trust_dir, self.prefix)

    def path_for(self, name: str) -> Path:
        """Where the entry NAME lives."""
        return self.trust_dir / f"{self.prefix}{name}.crt"

    # -- refreshing the OS store ------------------------------------------------------------

    def argv_for(self, *, removed: bool) -> tuple[str, ...]:
        """The refresh command for this pass."""
        argv = self.refresh_argv
        # update-ca-certificates only adds links; after a removal, --fresh drops the stale ones.
        if (
            removed
            and argv
            and Path(argv[0]).name == _UPDATE_CA_CERTIFICATES
            and not {"--fresh", "-f"} & set(argv[1:])
        ):
            argv = (*argv, "--fresh")
        return argv

    def refresh(
        self, removed: bool, timeout_s: float = 120, several: Sequence[Path] | None = None
    ) -> RefreshResult:
        """Run the refresh command once; raise TrustRefreshError on failure or timeout.
        `several`: the managed files holding more than one certificate, where the caller knows
        them (None: look at every managed file)."""
        argv = self.argv_for(removed=removed)
        command = " ".join(argv)
        # The hook runner's process handling: own session, output to a file (not a pipe a
        # lingering child could hold open), the whole tree killed on timeout, a bounded tail.
        ran = run_command("trust-refresh", "run", argv, phase="apply", env={}, timeout_s=timeout_s)
        result = RefreshResult(argv, ran.exit_code, ran.duration_ms, ran.output_tail)
        if ran.exit_code is None and ran.error is not None and ran.error.startswith("could not"):
            raise ApplyError(
                f"trust store refresh `{command}` (setting trust_refresh) cannot start: {ran.error}"
            )
        if ran.exit_code is None:
            raise TrustRefreshError(
                f"trust store refresh `{command}` timed out after {timeout_s:g} s and was killed"
                f"{_last_line(result.output_tail)}",
                result,
            )
        if ran.exit_code != 0:
            raise TrustRefreshError(
                f"trust store refresh `{command}` failed with exit code {ran.exit_code}"
                f"{_last_line(result.output_tail)}",
                result,
            )
        return result

    # -- proving the result -----------------------------------------------------------------

    def missing_after_refresh(self, certs_der: Sequence[bytes]) -> list[str]:
        """Subjects of the desired certificates that are not in the refreshed store, in order."""
        if not certs_der:
            return []
        present = self._present_digests()
        return [_subject(der) for der in certs_der if hashlib.sha256(der).digest() not in present]

    def missing_files_after_refresh(self, files: Sequence[Path]) -> list[str]:
        """Subjects of the certificates in `files` (entries this pass wrote) that the refreshed
        store lacks. A file that cannot be read counts as missing."""
        ders: list[bytes] = []
        for path in files:
            ders += _file_ders(path)
        return self.missing_after_refresh(ders)

    def _present_digests(self) -> set[bytes]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _BundleTrustStore(TrustStore):
    """A backend whose refresh writes one PEM bundle that TLS clients read."""

    bundle: Path = DEFAULT_DEBIAN_BUNDLE

    def _present_digests(self) -> set[bytes]:
        try:
            data = self.bundle.read_bytes()
        except OSError as exc:
            raise ApplyError(
                f"trust bundle {self.bundle}: cannot read it after `{' '.join(self.refresh_argv)}`"
                f": {exc.strerror or exc}"
            ) from exc
        return pem_cert_digests(data)


@dataclass(frozen=True, slots=True)
class DebianTrustStore(_BundleTrustStore):
    """`.crt` files in /usr/local/share/ca-certificates, `update-ca-certificates`, the bundle."""

    backend: ClassVar[str] = "debian"


@dataclass(frozen=True, slots=True)
class RhelTrustStore(_BundleTrustStore):
    """Anchors in /etc/pki/ca-trust/source/anchors, `update-ca-trust extract`, the TLS bundle."""

    backend: ClassVar[str] = "rhel"
    bundle: Path = DEFAULT_RHEL_BUNDLE


@dataclass(frozen=True, slots=True)
class DirectoryTrustStore(TrustStore):
    """Any directory used as an OpenSSL CApath: `openssl rehash DIR` makes the hash links.

    `openssl rehash` skips a file holding more than one certificate (with a warning and exit 0),
    so a multi-certificate entry is reported missing here rather than silently not trusted.
    """

    backend: ClassVar[str] = "directory"

    def refresh(
        self, removed: bool, timeout_s: float = 120, several: Sequence[Path] | None = None
    ) -> RefreshResult:
        """The refresh command, then hash links for what it skips by design: every
        certificate of a managed file that holds several (OpenSSL's CApath lookup loads the
        whole file a link names, so a link per certificate makes each one found). Where the
        caller says which files hold several, only those are looked at: a state of single
        certificates costs no scan of the store."""
        result = TrustStore.refresh(self, removed, timeout_s)
        if several is None or several:
            self._link_multi_certificate_files(several)
        return result

    def _link_multi_certificate_files(self, several: Sequence[Path] | None) -> None:
        links = self._hash_links()
        linked = {self._link_key(os.readlink(e.path)) for e in links if e.is_symlink()}
        taken = {entry.name for entry in links}
        paths = self.managed_files().values() if several is None else several
        for path in paths:
            if path.name in linked:
                continue
            ders = _file_ders(path)
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
                ders = _file_ders(path)
                if not ders:
                    missing.append(str(path))
                    continue
                # A certificate another file already holds is linked once (rehash skips the
                # duplicate): it is installed if some link leads to it.
                if present is None:
                    present = self._present_digests()
                missing += [
                    _subject(der) for der in ders if hashlib.sha256(der).digest() not in present
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
                cached = _LINK_DIGESTS.get(entry.path, info)
                if cached is not None:
                    present |= cached
                    continue
                read_at = fsio.now_ns()
                data = Path(entry.path).read_bytes()
            except OSError:
                continue  # a dangling link trusts nothing: its certificate counts as missing
            digests = frozenset(pem_cert_digests(data))
            _LINK_DIGESTS.put(entry.path, info, digests, read_at)
            present |= digests
        return present


# Proving a refresh reads every hash link in the directory; in a daemon, only the links to files
# that changed since the last pass need reading again.
_LINK_DIGESTS: fsio.StatCache[frozenset[bytes]] = fsio.StatCache()


def trust_store_from_settings(settings: Settings) -> TrustStore:
    """The backend the settings choose, with their directory, refresh command and prefix."""
    argv = settings.trust_refresh_argv
    trust_dir, prefix = settings.trust_path, settings.trust_prefix
    if settings.trust_store == "debian":
        return DebianTrustStore(trust_dir, prefix, argv, bundle=_debian_bundle(argv))
    if settings.trust_store == "rhel":
        return RhelTrustStore(trust_dir, prefix, argv)
    return DirectoryTrustStore(trust_dir, prefix, argv)


def managed_files(trust_dir: Path, prefix: str) -> dict[str, Path]:
    """NAME -> path for each `PREFIX+NAME.crt` in `trust_dir`; nothing else is ever returned.

    The one place that decides which trust-store files are ours (planning, status and metrics
    all ask here). NAME is returned as found, even when it is no valid entry name, so that such
    a file (ours by its prefix) is deleted by the plan rather than left behind.
    """
    found = managed_paths(trust_dir, prefix)
    return {name: Path(found[name]) for name in sorted(found)}


def managed_paths(trust_dir: Path | str, prefix: str) -> dict[str, str]:
    """`managed_files` unsorted, with the paths as strings: for a pass that lists many
    entries (a `Path` per entry would cost more than the listing itself)."""
    found: dict[str, str] = {}
    try:
        entries = list(os.scandir(trust_dir))
    except FileNotFoundError:
        return found
    except OSError as exc:
        raise ApplyError(f"trust directory {trust_dir}: cannot list it: {exc}") from exc
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(".crt"):
            continue
        stem = name[len(prefix) : -len(".crt")]
        # A directory with our name is not a trust entry we wrote; leave it to the operator.
        if not stem or entry.is_dir(follow_symlinks=False):
            continue
        found[stem] = entry.path
    return found


CERT_FILE_LIMIT = 64 << 20
"""Certificate files read back (targets, trust entries): a bundle of every CA is far under."""


def certificates_in(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file; none when it cannot be read or parsed."""
    try:
        # Through the safe reader: a FIFO or device someone put at a target never hangs status.
        data = fsio.read_safe(path, CERT_FILE_LIMIT, follow=True)
        return list(x509.load_pem_x509_certificates(data)) if data else []
    except (OSError, ValueError):
        return []


def _file_ders(path: Path) -> list[bytes]:
    return [cert.public_bytes(Encoding.DER) for cert in certificates_in(path)]


def pem_cert_digests(data: bytes) -> set[bytes]:
    """SHA-256 digests of the DER of every CERTIFICATE block in a PEM bundle.

    Decoding base64 without parsing X.509 keeps a 10,000-entry bundle well under a second.
    """
    return {hashlib.sha256(der).digest() for der in pem_cert_ders(data)}


def pem_cert_ders(data: bytes) -> list[bytes]:
    """The DER of every CERTIFICATE block in PEM data, in order, without parsing X.509."""
    ders: list[bytes] = []
    for match in _PEM_CERT_RE.finditer(data):
        try:
            ders.append(binascii.a2b_base64(match.group(1)))
        except binascii.Error:
            continue  # a damaged block holds no certificate we could have asked for
    return ders


def _debian_bundle(argv: Sequence[str]) -> Path:
    """The bundle update-ca-certificates writes: ETCCERTSDIR/CERTBUNDLE, from its flags."""
    if not argv or Path(argv[0]).name != _UPDATE_CA_CERTIFICATES:
        return DEFAULT_DEBIAN_BUNDLE
    etc_dir = _flag_value(argv, "--etccertsdir")
    bundle = _flag_value(argv, "--certbundle")
    etc = Path(etc_dir) if etc_dir else DEFAULT_DEBIAN_BUNDLE.parent
    return etc / (bundle or DEFAULT_DEBIAN_BUNDLE.name)


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    value: str | None = None
    for index, arg in enumerate(argv[:-1]):
        if arg == flag:
            value = argv[index + 1]  # the script's own parser lets a later flag win
    return value


def _last_line(tail: str) -> str:
    lines = [line for line in tail.splitlines() if line.strip()]
    return f": {lines[-1].strip()}" if lines else ""


def _subject(der: bytes) -> str:
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return f"unparsable certificate sha256:{hashlib.sha256(der).hexdigest()}"
