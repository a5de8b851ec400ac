"""The trust store backends by name: debian and rhel (one PEM bundle), directory; from settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.config import Settings
from reconciler.errors import ApplyError
from reconciler.truststore.base import UPDATE_CA_CERTIFICATES, TrustStore
from reconciler.truststore.certfiles import pem_cert_digests
from reconciler.truststore.directory import DirectoryTrustStore, TrustLinks

DEFAULT_DEBIAN_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_RHEL_BUNDLE = Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")


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


@dataclass(frozen=True, slots=True)
class RhelTrustStore(_BundleTrustStore):
    """Anchors in /etc/pki/ca-trust/source/anchors, `update-ca-trust extract`, the TLS bundle."""

    bundle: Path = DEFAULT_RHEL_BUNDLE


def trust_store_from_settings(
    settings: Settings, link_cache: TrustLinks | None = None
) -> TrustStore:
    """The backend the settings choose, with their directory, refresh command and prefix;
    `link_cache`: the directory backend's cache of what its hash links hold (see
    reconcile.Caches)."""
    argv = settings.trust_refresh_argv
    trust_dir, prefix = settings.trust_path, settings.trust_prefix
    if settings.trust_store == "debian":
        return DebianTrustStore(trust_dir, prefix, argv, bundle=_debian_bundle(argv))
    if settings.trust_store == "rhel":
        return RhelTrustStore(trust_dir, prefix, argv)
    if link_cache is None:
        return DirectoryTrustStore(trust_dir, prefix, argv)
    return DirectoryTrustStore(trust_dir, prefix, argv, link_cache)


def _debian_bundle(argv: Sequence[str]) -> Path:
    """The bundle update-ca-certificates writes: ETCCERTSDIR/CERTBUNDLE, from its flags."""
    if not argv or Path(argv[0]).name != UPDATE_CA_CERTIFICATES:
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
