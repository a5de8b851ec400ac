"""Reads STATE once: links resolved, limits and escapes checked, every input file as bytes.

A pass must see one consistent desired state even while GitOps tooling replaces it:

* a git-sync worktree: STATE itself is a link swapped by rename, the old worktree deleted at once;
* a Kubernetes ConfigMap/Secret volume: top-level links point into `..data`, itself a link to a
  `..TIMESTAMP` directory, swapped by rename, the old directory deleted right after.

So the snapshot resolves STATE (and `..data` inside it) once, reads every file through the resolved
directory, and checks at the end that neither link moved. If one did, or a file vanished mid-read,
the whole read is retried: such a state is in transit, not invalid.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.collect import error
from reconciler.core.desired import MAX_FILE_BYTES, NAME_RE, Finding
from reconciler.core.evaluate import GATEWAY_FILE, KeySource, Skipped, SourceFile, StateInput
from reconciler.core.paths import path_problem
from reconciler.core.rules import secret_rules
from reconciler.core.secret import SecretBytes
from reconciler.core.toml_limits import load_toml
from reconciler.fsio import read_safe, read_up_to
from reconciler.redact import remember_key

_CERT_RULES = (
    "pem-invalid", "pem-no-certificate", "cert-invalid", "chain-order", "chain-cert-validity",
    "leaf-validity", "leaf-min-days", "leaf-expiring", "leaf-self-signed", "leaf-eku",
    "leaf-public-key",
)  # fmt: skip
"""What `validate --no-secrets` cannot check when the identity's cert lives in a key_dir."""

K8S_DATA = "..data"
_KEY_MARK = b"PRIVATE KEY-----"
TRUST_SUFFIXES = (".pem", ".crt")
RETRIES = 8
#: First pause between reads of a snapshot in transit; doubles each time (about 2.5 s in all).
RETRY_PAUSE_S = 0.01
# Never follows a link it was not told to resolve; never blocks on a FIFO someone put there.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# A first read this large takes any certificate or profile file whole.
_READ_BYTES = 16384


class SnapshotMovedError(Exception):
    """The desired state changed under the reader: read it again."""


@dataclass(frozen=True, slots=True)
class _Base:
    state: Path
    """STATE as configured (maybe a link)."""
    real: str
    """STATE resolved once."""
    data_real: str | None
    """`..data` inside STATE resolved once, for Kubernetes volumes."""


def read_snapshot(
    state_dir: Path, key_dirs: Sequence[Path] = (), *, no_secrets: bool = False, fleet: bool = True
) -> StateInput:
    """Read the desired state once; retry while it is being swapped.

    `no_secrets`: secret references (the key) are listed in `StateInput.skipped`, never read (a
    GitOps repo's CI). A gateway of a fleet repository (`REPO/gateways/NAME`) is read composed with
    the fleet's shared layers (`reconciler.fleet`); `fleet=False` reads the one directory alone."""
    if fleet:
        from reconciler.fleet import fleet_root, read_composed

        repo = fleet_root(state_dir)
        if repo is not None:
            return read_composed(repo, state_dir, key_dirs, no_secrets=no_secrets)
    last: SnapshotMovedError | None = None
    for attempt in range(RETRIES):
        try:
            return _read(state_dir, key_dirs, no_secrets)
        except SnapshotMovedError as exc:
            last = exc
            # The swapper is mid-way: give it a moment (no event marks the end of a swap).
            time.sleep(RETRY_PAUSE_S * 2**attempt)
    reason = f"kept changing while being read ({last}); will read it again"
    finding = error(str(state_dir), None, reason, rule="state-in-transit")
    return StateInput("unknown", None, findings=(finding,), in_transit=True)


def _read(state_dir: Path, key_dirs: Sequence[Path], no_secrets: bool = False) -> StateInput:
    if not state_dir.exists():
        return _unusable(state_dir, "desired-state directory does not exist")
    if not state_dir.is_dir():
        return _unusable(state_dir, "desired state is not a directory")
    real = os.path.realpath(state_dir)
    data_link = os.path.join(real, K8S_DATA)
    data_real = os.path.realpath(data_link) if os.path.islink(data_link) else None
    if data_real is not None and not _inside(data_real, real):
        data_real = None  # a `..data` leading outside is no volume: what it holds is an escape
    base = _Base(state_dir, real, data_real)
    reader = _Reader(base, key_dirs, no_secrets)

    gateway = reader.read(GATEWAY_FILE, None, missing_ok=True)
    cert: SourceFile | None = None
    key: KeySource | None = None
    paths = _identity_paths(gateway)
    if paths is not None:
        cert = reader.read_cert(paths[0])
        key = reader.read_key(paths[1])
    trust = reader.listing("trust", TRUST_SUFFIXES)
    profiles = reader.listing("profiles", (".toml",))
    credentials = read_credentials(reader, profiles)
    _check_unchanged(base)
    reader.check_key_dirs_unchanged()
    nothing_read = gateway is None and not trust and not profiles and not reader.findings
    if nothing_read and not os.listdir(real):
        return _unusable(state_dir, "desired-state directory is empty")
    content = reader.digest.hexdigest()
    revision = _git_revision(Path(real)) or "sha256:" + content
    return StateInput(
        content_digest=content,
        revision=revision,
        gateway=gateway,
        cert=cert,
        key=key,
        trust=trust,
        profiles=profiles,
        credentials=credentials,
        findings=tuple(reader.findings),
        skipped=tuple(reader.skipped),
    )


def _unusable(state_dir: Path, reason: str) -> StateInput:
    return StateInput(
        "unknown", None, findings=(error(str(state_dir), None, reason, rule="state-unusable"),)
    )


def _identity_paths(gateway: SourceFile | None) -> tuple[str, str] | None:
    """The identity paths gateway.toml names, if they are strings (the core judges the rest)."""
    if gateway is None or gateway.data is None:
        return None
    try:
        raw, _problem = load_toml(gateway.data.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    identity = raw.get("identity")
    if not isinstance(identity, dict):
        return None
    cert, key = identity.get("cert"), identity.get("key")
    if isinstance(cert, str) and isinstance(key, str) and cert and key:
        return cert, key
    return None


_CREDENTIAL_KEYS = ("password_file", "api_key_file")


def read_credentials(
    reader: _Reader, profiles: Sequence[tuple[str, SourceFile]]
) -> tuple[tuple[str, KeySource], ...]:
    """The credential files the profiles name, read from key_dirs with the reader's own rules.

    Findings name the profile file and the field (and the path), never the value; each value
    read is handed to the redaction, so no output can show it.
    """
    from reconciler.redact import remember_secret

    read: dict[str, KeySource] = {}
    for _, source in profiles:
        for field, path in _credential_paths(source):
            if path in read or not os.path.isabs(path) or not path.isprintable():
                continue  # read once; a relative path or control character is the core's error
            if reader.skip_secret(path, f"{source.path}: {field}", ("credential-file",)):
                read[path] = KeySource(path, None)
                continue
            real = os.path.realpath(path)
            if not any(_inside(real, d) for d in reader.key_dirs):
                reason = f"{path}: a credential file must be inside one of key_dirs"
                if not reader.key_dirs:
                    reason += " (none are set)"
                reader.findings.append(error(source.path, field, reason, rule="credential-file"))
                read[path] = KeySource(path, None)
                continue
            before = len(reader.findings)
            data = reader._load(real, path, field)
            if data is None and os.path.realpath(path) != real:
                # A Secret volume's `..data` swapped mid-read (the old directory goes at once).
                raise SnapshotMovedError(f"{path} moved while being read")
            reader.findings[before:] = [
                Finding(f.severity, source.path, field, f"{path}: {f.reason}", "credential-file")
                for f in reader.findings[before:]
            ]
            if data is not None:
                remember_secret(data)
            read[path] = KeySource(path, SecretBytes(data) if data is not None else None)
    return tuple(sorted(read.items()))


def _credential_paths(source: SourceFile) -> list[tuple[str, str]]:
    """(field, path) of the credential files a profile names, if they are strings."""
    data = source.data
    if data is None or (b"password_file" not in data and b"api_key_file" not in data):
        return []
    try:
        raw, _ = load_toml(data.decode("utf-8"))  # its problems are the profile's own findings
    except UnicodeDecodeError:
        return []
    return [(k, v) for k in _CREDENTIAL_KEYS if isinstance(v := raw.get(k), str) and v]


def _check_unchanged(base: _Base) -> None:
    if os.path.realpath(base.state) != base.real:
        raise SnapshotMovedError("the desired-state link was swapped")
    data_link = os.path.join(base.real, K8S_DATA)
    if base.data_real is not None and os.path.realpath(data_link) != base.data_real:
        raise SnapshotMovedError("the ..data link was swapped")


class _Reader:
    """Reads files of one snapshot, collecting findings and the content digest."""

    def __init__(self, base: _Base, key_dirs: Sequence[Path], no_secrets: bool = False) -> None:
        self.base = base
        self.no_secrets = no_secrets
        self.skipped: list[Skipped] = []
        self.key_dirs = [os.path.realpath(d) for d in key_dirs]
        self.findings: list[Finding] = []
        self.digest = hashlib.sha256()
        self.key_data: dict[str, str] = {}
        """Each key dir read from that is a Kubernetes volume: its `..data` as first resolved."""

    def _resolve(self, rel: str) -> str:
        """The real path of STATE/rel, with `..data` taken as resolved at the start."""
        real = os.path.realpath(os.path.join(self.base.real, rel))
        data = self.base.data_real
        if data is not None and _inside(real, self.base.real):
            name = os.path.relpath(real, self.base.real).split(os.sep)[0]
            if name.startswith("..") and name != K8S_DATA and not _inside(real, data):
                raise SnapshotMovedError(f"{rel} points into {name}, not the current ..data")
        return real

    def read(self, rel: str, field: str | None, *, missing_ok: bool = False) -> SourceFile | None:
        if field is not None and (problem := path_problem(rel)) is not None:
            self.findings.append(error(GATEWAY_FILE, field, problem, rule="path-invalid"))
            return SourceFile(field, None)  # the value itself is never shown
        if os.path.isabs(rel) or rel.startswith("~"):
            self.findings.append(
                error(
                    GATEWAY_FILE,
                    field,
                    f"{rel}: must be relative to STATE",
                    rule="path-not-relative",
                )
            )
            return SourceFile(rel, None)
        real = self._resolve(rel)
        if not _inside(real, self.base.real):
            self.findings.append(
                error(
                    rel, field, "path leads outside the desired-state directory", rule="path-escape"
                )
            )
            return SourceFile(rel, None)
        # Only a file that is not there at all may be missing; a dangling link is reported.
        absent = missing_ok and not os.path.lexists(os.path.join(self.base.real, rel))
        data = self._load(real, rel, field, missing_ok=absent)
        if absent and data is None:
            return None
        return SourceFile(rel, data)

    def skip_secret(self, path: str, field: str, rules: tuple[str, ...]) -> bool:
        """True (and listed as skipped) for a secret reference under `no_secrets`: an absolute
        path (a key_dirs mount that CI does not have) or a relative one that stays in STATE."""
        if not self.no_secrets:
            return False
        if not os.path.isabs(path) and not _inside(self._resolve(path), self.base.real):
            return False  # reading it reports the escape
        self.skipped.append(Skipped(field, path, rules))
        return True

    def read_cert(self, path: str) -> SourceFile:
        if (problem := path_problem(path)) is not None:
            self.findings.append(error(GATEWAY_FILE, "identity.cert", problem, rule="path-invalid"))
            return SourceFile("identity.cert", None)  # the value itself is never shown
        if os.path.isabs(path):
            if self.skip_secret(path, "identity.cert", _CERT_RULES):
                return SourceFile(path, None)
            return SourceFile(path, self._read_in_key_dir(path, "identity.cert", "cert"))
        source = self.read(path, "identity.cert")
        assert source is not None
        return source

    def read_key(self, path: str) -> KeySource:
        if (problem := path_problem(path)) is not None:
            self.findings.append(error(GATEWAY_FILE, "identity.key", problem, rule="path-invalid"))
            return KeySource("identity.key", None)  # the value itself is never shown
        if self.skip_secret(path, "identity.key", secret_rules()):
            return KeySource(path, None)
        if os.path.isabs(path):
            data = self._read_in_key_dir(path, "identity.key", "key")
            return KeySource(path, SecretBytes(data) if data is not None else None)
        source = self.read(path, "identity.key")
        assert source is not None
        return KeySource(path, SecretBytes(source.data) if source.data is not None else None)

    def _read_in_key_dir(self, path: str, field: str, what: str) -> bytes | None:
        """An absolute identity path: inside one of key_dirs (a mounted Secret), whose `..data`
        is resolved once per snapshot like STATE's, so cert and key come from one version."""
        key_dir = next((d for d in self.key_dirs if _inside(os.path.abspath(path), d)), None)
        if key_dir is None:  # the path as written may name a link into a key dir
            key_dir = next((d for d in self.key_dirs if _inside(os.path.realpath(path), d)), None)
        if key_dir is None:
            reason = f"{path}: an absolute {what} path must be inside one of key_dirs"
            if not self.key_dirs:
                reason += " (none are set)"
            self.findings.append(error(GATEWAY_FILE, field, reason, rule="key-outside-key-dirs"))
            return None
        data_link = os.path.join(key_dir, K8S_DATA)
        if key_dir not in self.key_data and os.path.islink(data_link):
            self.key_data[key_dir] = os.path.realpath(data_link)
        real = os.path.realpath(path)
        if not _inside(real, key_dir):
            reason = f"{path}: leads outside key_dirs"
            self.findings.append(error(GATEWAY_FILE, field, reason, rule="key-outside-key-dirs"))
            return None
        return self._load(real, path, field)

    def check_key_dirs_unchanged(self) -> None:
        for key_dir, data_real in self.key_data.items():
            if os.path.realpath(os.path.join(key_dir, K8S_DATA)) != data_real:
                raise SnapshotMovedError(f"the ..data link of {key_dir} was swapped")

    def _load(
        self, real: str, shown: str, field: str | None, *, missing_ok: bool = False
    ) -> bytes | None:
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except FileNotFoundError as exc:
            if self._vanished(shown):
                raise SnapshotMovedError(f"{shown} vanished while being read") from exc
            if not missing_ok:
                self.findings.append(
                    error(shown, field, "file does not exist", rule="file-missing")
                )
            return None
        except OSError as exc:
            self.findings.append(
                error(shown, field, f"cannot be read: {_strerror(exc)}", rule="file-unreadable")
            )
            return None
        return self._read_open(fd, shown, field)

    def _read_open(self, fd: int, shown: str, field: str | None) -> bytes | None:
        """The content of a file just opened (closed here), or None with a finding."""
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self.findings.append(
                    error(shown, field, "not a regular file", rule="file-not-regular")
                )
                return None
            if info.st_size > MAX_FILE_BYTES:
                self.findings.append(
                    error(
                        shown,
                        field,
                        f"{info.st_size} bytes: over the 1 MiB limit",
                        rule="file-too-large",
                    )
                )
                return None
            # The size stat gave, plus one: a short read is the end of a regular file, so one
            # read does (thousands of files a pass); only a file that grew meanwhile loops.
            data = os.read(fd, info.st_size + 1)
            if len(data) > info.st_size:
                data = read_up_to(fd, MAX_FILE_BYTES, data)
        except OSError as exc:
            self.findings.append(
                error(shown, field, f"cannot be read: {_strerror(exc)}", rule="file-unreadable")
            )
            return None
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:
            self.findings.append(error(shown, field, "over the 1 MiB limit", rule="file-too-large"))
            return None
        return self._kept(shown, data)

    def _read_listed(self, path: str, shown: str) -> bytes | None:
        """`_load` for a file its directory listing says is regular: no fstat for its type or
        size (most of the time of many small reads); one read takes any file up to _READ_BYTES."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return self._load(path, shown, None)  # the same failure again, reported by _load
        try:
            data = os.read(fd, _READ_BYTES)
            if len(data) == _READ_BYTES:
                data = read_up_to(fd, MAX_FILE_BYTES, data)
        except OSError as exc:
            self.findings.append(
                error(shown, None, f"cannot be read: {_strerror(exc)}", rule="file-unreadable")
            )
            return None
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:
            return self._load(path, shown, None)  # says how large, as for any other file
        return self._kept(shown, data)

    def _kept(self, shown: str, data: bytes) -> bytes:
        """`data` read for `shown`, counted into the content digest (the revision without git):
        the path shown, the length and the bytes, so no two states hash alike by moving bytes."""
        self.digest.update(b"%s\0%d\0%s" % (os.fsencode(shown), len(data), data))
        if _KEY_MARK in data:
            remember_key(data)  # a key file, or a manifest with one inline: never echoed
        return data

    def _vanished(self, shown: str) -> bool:
        """A file that disappears while its snapshot moved is in transit, not missing."""
        try:
            _check_unchanged(self.base)
            self.check_key_dirs_unchanged()
        except SnapshotMovedError:
            return True
        return not os.path.isdir(self.base.real)

    def listing(self, folder: str, suffixes: tuple[str, ...]) -> tuple[tuple[str, SourceFile], ...]:
        link = os.path.join(self.base.real, folder)
        if not os.path.lexists(link):
            return ()
        real = self._resolve(folder)
        if not _inside(real, self.base.real):
            self.findings.append(
                error(folder, None, "leads outside the desired-state directory", rule="path-escape")
            )
            return ()
        try:
            # The entry's type comes with its name (d_type): no stat per file.
            with os.scandir(real) as listed:
                entries = {e.name: e for e in listed}
        except FileNotFoundError as exc:
            if self._vanished(folder):
                raise SnapshotMovedError(f"{folder}/ vanished while being read") from exc
            self.findings.append(
                error(
                    folder, None, "leads to a directory that does not exist", rule="folder-unusable"
                )
            )
            return ()
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                self.findings.append(error(folder, None, "not a directory", rule="folder-unusable"))
            else:
                self.findings.append(
                    error(
                        folder, None, f"cannot be listed: {_strerror(exc)}", rule="file-unreadable"
                    )
                )
            return ()
        found: dict[str, tuple[str, SourceFile]] = {}
        stray: list[str] = []
        for entry in sorted(entries):
            named = _entry_name(folder, entry, suffixes)
            if named is None:
                continue  # hidden files, ConfigMap `..data` plumbing, editor swap files
            stem, rel, problem = named
            if problem is not None and problem.severity == "warning":
                stray.append(entry)
                continue
            if problem is not None:
                self.findings.append(problem)
                continue
            if stem in found:
                other = found[stem][1].path
                self.findings.append(
                    error(
                        rel, None, f"same name as {other}: keep one of them", rule="name-duplicate"
                    )
                )
                continue
            listed_entry = entries[entry]
            if listed_entry.is_symlink():
                source = self.read(rel, None)
                assert source is not None
            else:
                # A plain file in the folder resolved above: its real path is that folder's plus
                # its name, so resolving it again (an lstat per path component, per file, 12,000
                # files in the benchmarks) would find nothing new.
                path = f"{real}/{entry}"
                data = None
                if listed_entry.is_file(follow_symlinks=False):
                    data = self._read_listed(path, rel)
                else:
                    self.findings.append(
                        error(rel, None, "not a regular file", rule="file-not-regular")
                    )
                source = SourceFile(rel, data)
            found[stem] = (stem, source)
        if stray:
            self.findings.append(_stray_warning(folder, stray, suffixes))
        return tuple(found[name] for name in sorted(found))


@functools.lru_cache(maxsize=65536)
def _entry_name(
    folder: str, entry: str, suffixes: tuple[str, ...]
) -> tuple[str, str, Finding | None] | None:
    """(NAME, path shown, the finding that rules the entry out) for a file in a listed folder;
    None for a hidden one. Cached: a daemon lists the same thousands of names at every pass."""
    if entry.startswith("."):
        return None
    rel = f"{folder}/{entry}"
    dot = entry.rfind(".")  # os.path.splitext, for a name with no slash and no lead dot
    stem, suffix = (entry[:dot], entry[dot:]) if dot > 0 else (entry, "")
    if suffix not in suffixes:
        wanted = " or ".join(f"NAME{s}" for s in suffixes)
        return (
            stem,
            rel,
            Finding("warning", rel, None, f"ignored: not {wanted}", rule="name-ignored"),
        )
    if not NAME_RE.fullmatch(stem):
        return (
            stem,
            rel,
            error(rel, None, f"name {stem!r} must match {NAME_RE.pattern}", rule="name-invalid"),
        )
    return stem, rel, None


STRAY_NAMES_SHOWN = 3


def _stray_warning(folder: str, names: list[str], suffixes: tuple[str, ...]) -> Finding:
    """One warning for every file a folder holds that is not NAME.SUFFIX: its count and the
    first few names (20,000 of them are one line, not 20,000)."""
    wanted = " or ".join(f"NAME{s}" for s in suffixes)
    shown = ", ".join(repr(name) for name in names[:STRAY_NAMES_SHOWN])
    more = f" and {len(names) - STRAY_NAMES_SHOWN} more" if len(names) > STRAY_NAMES_SHOWN else ""
    count = "1 file" if len(names) == 1 else f"{len(names)} files"
    reason = f"{count} ignored, not {wanted}: {shown}{more}"
    return Finding("warning", f"{folder}/", None, reason, rule="name-ignored")


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


_GIT_FILE_LIMIT = 1 << 16
_PACKED_REFS_LIMIT = 64 << 20


def _git_text(path: Path, limit: int = _GIT_FILE_LIMIT) -> str | None:
    """A git metadata file's text through the safe reader: a FIFO, device or link there (a
    hostile push) is no revision, never a hang or a 10 GB read."""
    data = read_safe(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def _git_revision(worktree: Path) -> str | None:
    """The commit checked out at `worktree`, read from .git without running git, or None."""
    dot_git = worktree / ".git"
    try:
        if dot_git.is_dir():
            git_dir = dot_git
        else:
            text = (_git_text(dot_git) or "").strip()
            if not text.startswith("gitdir:"):
                return None
            git_dir = (worktree / text.removeprefix("gitdir:").strip()).resolve()
        head = (_git_text(git_dir / "HEAD") or "").strip()
        if not head.startswith("ref:"):
            return head if _is_sha(head) else None
        ref = head.removeprefix("ref:").strip()
        common = git_dir
        commondir = _git_text(git_dir / "commondir")
        if commondir is not None:
            common = (git_dir / commondir.strip()).resolve()
        for base in (git_dir, common):
            sha_text = _git_text(base / ref)
            if sha_text is not None:
                sha = sha_text.strip()
                return sha if _is_sha(sha) else None
        packed = _git_text(common / "packed-refs", _PACKED_REFS_LIMIT)
        for line in (packed or "").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _is_sha(sha):
                return sha
    except (OSError, ValueError):
        return None
    return None


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)
