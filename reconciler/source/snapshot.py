"""Reads STATE once: links resolved, limits and escapes checked, every input file as bytes.

A pass must see one consistent desired state even while GitOps tooling replaces it (a git-sync
link swap, a Kubernetes `..data` swap: see `reconciler.source.links`). So the snapshot resolves
STATE (and `..data` inside it) once, reads every file through the resolved directory, and checks
at the end that neither link moved. If one did, or a file vanished mid-read, the whole read is
retried: such a state is in transit, not invalid.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from reconciler.core.collect import error
from reconciler.core.desired import Finding
from reconciler.core.evaluate import GATEWAY_FILE, KeySource, SourceFile, StateInput
from reconciler.core.paths import path_problem
from reconciler.core.secret import SecretBytes
from reconciler.core.toml_limits import load_toml
from reconciler.source.cache import SourceCache
from reconciler.source.links import (
    RETRIES,
    RETRY_PAUSE_S,
    PinnedState,
    SnapshotMovedError,
    git_revision,
    inside,
)
from reconciler.source.reader import StateReader

TRUST_SUFFIXES = (".pem", ".crt")


def read_directory(
    state_dir: Path,
    key_dirs: Sequence[Path] = (),
    *,
    no_secrets: bool = False,
    cache: SourceCache | None = None,
) -> StateInput:
    """Read one desired-state directory once; retry while it is being swapped.

    `no_secrets`: secret references (the key) are listed in `StateInput.skipped`, never read (a
    GitOps repo's CI). A fleet gateway is read by `reconciler.source.state.read_snapshot`, which
    composes it with its shared layers, each read here."""
    last: SnapshotMovedError | None = None
    for attempt in range(RETRIES):
        try:
            return _read_once(state_dir, key_dirs, no_secrets, cache)
        except SnapshotMovedError as exc:
            last = exc
            # The swapper is mid-way: give it a moment (no event marks the end of a swap).
            time.sleep(RETRY_PAUSE_S * 2**attempt)
    reason = f"kept changing while being read ({last}); will read it again"
    finding = error(str(state_dir), None, reason, rule="state-in-transit")
    return StateInput("unknown", None, findings=(finding,), in_transit=True)


def _read_once(
    state_dir: Path, key_dirs: Sequence[Path], no_secrets: bool, cache: SourceCache | None
) -> StateInput:
    if not state_dir.exists():
        return _unusable(state_dir, "desired-state directory does not exist")
    if not state_dir.is_dir():
        return _unusable(state_dir, "desired state is not a directory")
    base = PinnedState.pin(state_dir)
    reader = StateReader(base, key_dirs, no_secrets, cache)

    gateway = reader.read(GATEWAY_FILE, None, missing_ok=True)
    cert: SourceFile | None = None
    key: KeySource | None = None
    paths = _identity_paths(gateway)
    if paths is not None:
        cert = reader.read_cert(paths[0])
        key = reader.read_key(paths[1])
    trust = reader.listing("trust", TRUST_SUFFIXES)
    profiles = reader.listing("profiles", (".toml",))
    credentials = _read_credentials(reader, profiles)
    base.check_unchanged()
    reader.key_dirs.check_unchanged()
    reader.lineages.check_unchanged()
    nothing_read = gateway is None and not trust and not profiles and not reader.findings
    if nothing_read:
        try:
            empty = not os.listdir(base.real)
        except (FileNotFoundError, NotADirectoryError) as exc:
            # Gone meanwhile (a checkout replaced, a volume unmounted): read again, never crash.
            raise SnapshotMovedError(f"{state_dir} vanished while being read") from exc
        except OSError as exc:
            return _unusable(state_dir, f"desired-state directory cannot be listed: {exc.strerror}")
        if empty:
            return _unusable(state_dir, "desired-state directory is empty")
    content = reader.digest.hexdigest()
    revision = git_revision(Path(base.real)) or "sha256:" + content
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


def _read_credentials(
    reader: StateReader, profiles: Sequence[tuple[str, SourceFile]]
) -> tuple[tuple[str, KeySource], ...]:
    """The credential files the profiles name, read from key_dirs with the reader's own rules.

    Findings name the profile file and the field (and the path), never the value; each value
    read is handed to the redaction, so no output can show it.
    """
    from reconciler.support.redact import remember_secret

    read: dict[str, KeySource] = {}
    for _, source in profiles:
        for field, path in _credential_paths(source):
            if path in read or not os.path.isabs(path) or path_problem(path) is not None:
                continue  # read once; a relative or refused path is the core's error
            if reader.skip_secret(path, f"{source.path}: {field}", ("credential-file",)):
                read[path] = KeySource(path, None)
                continue
            real = os.path.realpath(path)
            if not any(inside(real, d) for d in reader.key_dirs.dirs):
                reason = f"{path}: a credential file must be inside one of key_dirs"
                if not reader.key_dirs.dirs:
                    reason += " (none are set)"
                reader.findings.append(error(source.path, field, reason, rule="credential-file"))
                read[path] = KeySource(path, None)
                continue
            before = len(reader.findings)
            data = reader.load(real, path, field)
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
