"""Reads the named files and listed folders of a pinned STATE and key_dirs, with their findings."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.core.collect import error
from reconciler.core.desired import NAME_RE, Finding
from reconciler.core.evaluate import GATEWAY_FILE, KeySource, Skipped, SourceFile
from reconciler.core.paths import path_problem
from reconciler.core.rules import secret_rules
from reconciler.core.secret import SecretBytes
from reconciler.source.cache import SourceCache
from reconciler.source.files import DIR_FLAGS, FileReader, strerror
from reconciler.source.links import (
    K8S_DATA,
    PinnedKeyDirs,
    PinnedState,
    SnapshotMovedError,
    inside,
)

_CERT_RULES = (
    "pem-invalid", "pem-no-certificate", "cert-invalid", "chain-order", "chain-cert-validity",
    "leaf-validity", "leaf-min-days", "leaf-expiring", "leaf-self-signed", "leaf-eku",
    "leaf-public-key",
)  # fmt: skip
"""What `validate --no-secrets` cannot check when the identity's cert lives in a key_dir."""

STRAY_NAMES_SHOWN = 3


class StateReader(FileReader):
    """Reads the files of one snapshot by the paths STATE names, and its folders."""

    def __init__(
        self,
        base: PinnedState,
        key_dirs: Sequence[Path],
        no_secrets: bool = False,
        cache: SourceCache | None = None,
    ) -> None:
        super().__init__(base, PinnedKeyDirs(key_dirs), cache)
        self.no_secrets = no_secrets
        self.skipped: list[Skipped] = []

    def _resolve(self, rel: str) -> str:
        """The real path of STATE/rel, with `..data` taken as resolved at the start."""
        real = os.path.realpath(os.path.join(self.base.real, rel))
        data = self.base.data_real
        if data is not None and inside(real, self.base.real):
            name = os.path.relpath(real, self.base.real).split(os.sep)[0]
            if name.startswith("..") and name != K8S_DATA and not inside(real, data):
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
        if not inside(real, self.base.real):
            self.findings.append(
                error(
                    rel, field, "path leads outside the desired-state directory", rule="path-escape"
                )
            )
            return SourceFile(rel, None)
        # Only a file that is not there at all may be missing; a dangling link is reported.
        absent = missing_ok and not os.path.lexists(os.path.join(self.base.real, rel))
        source = self.load_file(real, rel, field, missing_ok=absent)
        if source is not None:
            return source
        return None if absent else SourceFile(rel, None)

    def skip_secret(self, path: str, field: str, rules: tuple[str, ...]) -> bool:
        """True (and listed as skipped) for a secret reference under `no_secrets`: an absolute
        path (a key_dirs mount that CI does not have) or a relative one that stays in STATE."""
        if not self.no_secrets:
            return False
        if not os.path.isabs(path) and not inside(self._resolve(path), self.base.real):
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
        is resolved once per snapshot like STATE's, so cert and key come from one version; or
        a link of certbot's live directory into its archive, both read from one renewal."""
        key_dir = self.key_dirs.containing(path)
        if key_dir is None:
            reason = f"{path}: an absolute {what} path must be inside one of key_dirs"
            if not self.key_dirs.dirs:
                reason += " (none are set)"
            self.findings.append(error(GATEWAY_FILE, field, reason, rule="key-outside-key-dirs"))
            return None
        self.key_dirs.pin(key_dir)
        archive = self.lineages.archive_for(path, key_dir)
        real = os.path.realpath(path)
        if not inside(real, key_dir) and (archive is None or not inside(real, archive)):
            reason = f"{path}: leads outside key_dirs"
            if archive is not None:
                reason += f" and certbot's {archive}"
            self.findings.append(error(GATEWAY_FILE, field, reason, rule="key-outside-key-dirs"))
            return None
        return self.load(real, path, field)

    def listing(self, folder: str, suffixes: tuple[str, ...]) -> tuple[tuple[str, SourceFile], ...]:
        """(NAME, file) for each `folder/NAME.SUFFIX`, sorted; other names are findings."""
        link = os.path.join(self.base.real, folder)
        if not os.path.lexists(link):
            return ()
        real = self._resolve(folder)
        if not inside(real, self.base.real):
            self.findings.append(
                error(folder, None, "leads outside the desired-state directory", rule="path-escape")
            )
            return ()
        try:
            folder_fd = os.open(real, DIR_FLAGS)
        except FileNotFoundError as exc:
            if self.vanished():
                raise SnapshotMovedError(f"{folder}/ vanished while being read") from exc
            self.findings.append(
                error(
                    folder, None, "leads to a directory that does not exist", rule="folder-unusable"
                )
            )
            return ()
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                self.findings.append(error(folder, None, "not a directory", rule="folder-unusable"))
            else:
                self.findings.append(
                    error(
                        folder, None, f"cannot be listed: {strerror(exc)}", rule="file-unreadable"
                    )
                )
            return ()
        try:
            return self._read_folder(folder, folder_fd, real, suffixes)
        finally:
            os.close(folder_fd)

    def _read_folder(
        self, folder: str, folder_fd: int, real: str, suffixes: tuple[str, ...]
    ) -> tuple[tuple[str, SourceFile], ...]:
        try:
            # The entry's type comes with its name (d_type): no stat per file.
            with os.scandir(folder_fd) as listed:
                entries = {e.name: e for e in listed}
        except OSError as exc:
            self.findings.append(
                error(folder, None, f"cannot be listed: {strerror(exc)}", rule="file-unreadable")
            )
            return ()
        reading = self.listed(folder_fd, real)
        found: dict[str, tuple[str, SourceFile]] = {}
        stray: list[str] = []
        names = _names_of(folder, suffixes, entries)
        for entry in sorted(entries):
            named = names[entry]
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
                # A plain file in the folder opened above: read relative to it, so resolving
                # its path again (an lstat per path component, per file) is not needed.
                loaded = None
                if listed_entry.is_file(follow_symlinks=False):
                    loaded = self.load_listed(reading, entry, rel)
                else:
                    self.findings.append(
                        error(rel, None, "not a regular file", rule="file-not-regular")
                    )
                source = loaded if loaded is not None else SourceFile(rel, None)
            found[stem] = (stem, source)
        if stray:
            self.findings.append(_stray_warning(folder, stray, suffixes))
        return tuple(found[name] for name in sorted(found))


Named = tuple[str, str, Finding | None] | None
_NAMES: dict[tuple[str, tuple[str, ...]], dict[str, Named]] = {}
"""What the last listing of each folder made of its names: a daemon lists the same thousands
of names at every pass. Only the last listing's are kept."""


def _names_of(
    folder: str, suffixes: tuple[str, ...], entries: Mapping[str, object]
) -> dict[str, Named]:
    """`_entry_name` of each entry, from the last listing of `folder` where it was there."""
    key = (folder, suffixes)
    known = _NAMES.get(key, {})
    if known.keys() == entries.keys():
        # The same names as last time (every pass of a daemon between adds and removes): the
        # kept map as it is. A new one would hold this listing's copies of the names, and such
        # small objects made at each pass and kept scatter over the heap and pin its pages.
        return known
    names = {
        entry: known[entry] if entry in known else _entry_name(folder, entry, suffixes)
        for entry in entries
    }
    _NAMES[key] = names
    return names


def _entry_name(folder: str, entry: str, suffixes: tuple[str, ...]) -> Named:
    """(NAME, path shown, the finding that rules the entry out) for a file in a listed folder;
    None for a hidden one."""
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


def _stray_warning(folder: str, names: list[str], suffixes: tuple[str, ...]) -> Finding:
    """One warning for every file a folder holds that is not NAME.SUFFIX: its count and the
    first few names (however many there are, one line)."""
    wanted = " or ".join(f"NAME{s}" for s in suffixes)
    shown = ", ".join(repr(name) for name in names[:STRAY_NAMES_SHOWN])
    more = f" and {len(names) - STRAY_NAMES_SHOWN} more" if len(names) > STRAY_NAMES_SHOWN else ""
    count = "1 file" if len(names) == 1 else f"{len(names)} files"
    reason = f"{count} ignored, not {wanted}: {shown}{more}"
    return Finding("warning", f"{folder}/", None, reason, rule="name-ignored")
