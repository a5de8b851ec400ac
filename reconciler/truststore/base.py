"""What every trust store backend shares: the managed files, the refresh command, the proof.

The transaction layer writes and deletes `TRUST_DIR/PREFIX+NAME.crt` itself (atomically, with the
other targets of a pass). This module owns what is specific to each operating system:
which files in TRUST_DIR are ours, the command that turns them into the store the TLS
libraries read, and the check that every desired certificate really is in that store afterwards.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ApplyError
from reconciler.support.process import run_bounded
from reconciler.truststore.certfiles import cert_subject, file_ders

__all__ = [
    "RefreshResult",
    "TrustRefreshError",
    "TrustStore",
    "managed_files",
    "managed_paths",
]

UPDATE_CA_CERTIFICATES = "update-ca-certificates"


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

    # -- the managed files ------------------------------------------------------------------

    def managed_files(self) -> dict[str, Path]:
        """NAME -> path for each `PREFIX+NAME.crt` in TRUST_DIR (see `managed_files`)."""
        return managed_files(self.trust_dir, self.prefix)

    # -- refreshing the OS store ------------------------------------------------------------

    def argv_for(self, *, removed: bool) -> tuple[str, ...]:
        """The refresh command for this pass."""
        argv = self.refresh_argv
        # update-ca-certificates only adds links; after a removal, --fresh drops the stale ones.
        if (
            removed
            and argv
            and Path(argv[0]).name == UPDATE_CA_CERTIFICATES
            and not {"--fresh", "-f"} & set(argv[1:])
        ):
            argv = (*argv, "--fresh")
        return argv

    def settle_links(self) -> None:
        """Make the store's links right now, where the reconciler makes them in process (the
        `directory` backend without a refresh command); nothing for the other backends, whose
        tools run only when a pass changed an entry."""

    def refresh(
        self,
        removed: bool,
        timeout_s: float = 120,
        several: Sequence[Path] | None = None,
        changed: Mapping[str, bytes | None] | None = None,
    ) -> RefreshResult:
        """Run the refresh command once; raise TrustRefreshError on failure or timeout.
        `several`: the managed files holding more than one certificate, where the caller knows
        them (None: look at every managed file); `changed`: file name -> content (None: deleted)
        of the entries the pass just wrote or deleted, where the caller has them."""
        argv = self.argv_for(removed=removed)
        command = " ".join(argv)
        # The hook runner's process handling: own session, output to a file (not a pipe a
        # lingering child could hold open), the whole tree killed on timeout, a bounded tail.
        ran = run_bounded(argv, env={}, timeout_s=timeout_s)
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
        return [
            cert_subject(der) for der in certs_der if hashlib.sha256(der).digest() not in present
        ]

    def missing_files_after_refresh(self, files: Sequence[Path]) -> list[str]:
        """Subjects of the certificates in `files` (entries this pass wrote) that the refreshed
        store lacks. A file that cannot be read counts as missing."""
        ders: list[bytes] = []
        for path in files:
            ders += file_ders(path)
        return self.missing_after_refresh(ders)

    def _present_digests(self) -> set[bytes]:
        raise NotImplementedError


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


def _last_line(tail: str) -> str:
    lines = [line for line in tail.splitlines() if line.strip()]
    return f": {lines[-1].strip()}" if lines else ""
