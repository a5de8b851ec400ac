"""The gateway's layout under ROOT: every directory and file name the reconciler manages there.

Written here once; the renderer, the observer, the staging area, the watches, `status`, the
metrics and the console check all ask this module. Pure: paths are computed, never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Generic, TypeVar

__all__ = ["CREDENTIAL_SUFFIXES", "RootLayout"]

CREDENTIAL_SUFFIXES = (".password", ".api_key")
"""The names of the credential copies in ROOT/data/secrets end with one of these."""

P = TypeVar("P", bound=PurePath)


@dataclass(frozen=True, slots=True)
class RootLayout(Generic[P]):
    """ROOT's managed paths, of the same path type as `root` (a Path in, Paths out)."""

    root: P

    @property
    def data(self) -> P:
        """ROOT/data: the digital ID, the inbound SMTP settings and the server profiles."""
        return self.root / "data"

    @property
    def nginx(self) -> P:
        """ROOT/nginx: the web console's nginx include."""
        return self.root / "nginx"

    @property
    def secrets(self) -> P:
        """ROOT/data/secrets: the managed copies of the profiles' credentials."""
        return self.data / "secrets"

    @property
    def key(self) -> P:
        return self.data / "key.pem"

    @property
    def cert(self) -> P:
        return self.data / "cert.pem"

    @property
    def bundle(self) -> P:
        """tls.pem: the key followed by the chain, for daemons that take one file."""
        return self.data / "tls.pem"

    @property
    def ssl_conf(self) -> P:
        """Its presence turns HTTPS on the console on."""
        return self.nginx / "ssl.conf"

    @property
    def smtp_inbound(self) -> P:
        return self.data / "smtp-inbound.json"

    @property
    def server_profiles(self) -> P:
        return self.data / "server-profiles.json"

    @property
    def target_dirs(self) -> tuple[P, P]:
        """The directories created (0755) when missing, so that an empty ROOT converges."""
        return self.data, self.nginx

    def credential(self, profile: str, suffix: str) -> P:
        """ROOT/data/secrets/NAME.SUFFIX (password, api_key)."""
        return self.secrets / f"{profile}.{suffix}"
