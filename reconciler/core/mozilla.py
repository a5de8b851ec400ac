"""Mozilla Server Side TLS 5.7 as data: what render.py writes into the console's ssl.conf.

Transcribed from the guidelines JSON (https://ssl-config.mozilla.org/guidelines/5.7.json, the
`openssl` cipher names) and the nginx output of Mozilla's ssl-config-generator. Kept as code rather
than a bundled JSON file so the policy is reviewed in diffs and importing it reads no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from reconciler.core.desired import TlsPolicy

GUIDELINES_VERSION: Final = "5.7"


@dataclass(frozen=True, slots=True)
class MozillaPolicy:
    """One configuration of the guidelines, limited to what an nginx server block needs."""

    name: TlsPolicy
    tls_versions: tuple[str, ...]
    """nginx `ssl_protocols` names, oldest first."""
    ciphers: tuple[str, ...]
    """OpenSSL names of the TLS 1.2-and-earlier ciphers, in preference order; empty for modern."""
    ciphersuites: tuple[str, ...]
    """TLS 1.3 suites. nginx 1.22 has no directive for them; OpenSSL's default is this list."""
    tls_curves: tuple[str, ...]
    """Key exchange groups, for `ssl_ecdh_curve`."""
    server_preferred_order: bool
    """`ssl_prefer_server_ciphers`: on only where old clients would pick weak ciphers."""
    dh_param_size: int | None
    """Size of the DH group Mozilla pairs with the DHE ciphers (unused: see render.py)."""
    needs_seclevel_0: bool
    """OpenSSL 3 refuses TLS 1.0/1.1 (SHA-1 signatures) above security level 0."""
    oldest_clients: tuple[str, ...]


_TLS13_SUITES: Final = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
_CURVES: Final = ("X25519", "prime256v1", "secp384r1")

# 5.7 changed one thing from 5.6: DHE-RSA-CHACHA20-POLY1305 appended to intermediate.
_INTERMEDIATE_CIPHERS: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
)

_OLD_CIPHERS: Final = (
    *_INTERMEDIATE_CIPHERS,
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "DHE-RSA-AES128-SHA256",
    "DHE-RSA-AES256-SHA256",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA256",
    "AES256-SHA256",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
)

POLICIES: Final = MappingProxyType(
    {
        "modern": MozillaPolicy(
            name="modern",
            tls_versions=("TLSv1.3",),
            ciphers=(),
            ciphersuites=_TLS13_SUITES,
            tls_curves=_CURVES,
            server_preferred_order=False,
            dh_param_size=None,
            needs_seclevel_0=False,
            oldest_clients=(
                "Firefox 63",
                "Android 10.0",
                "Chrome 70",
                "Edge 75",
                "Java 11",
                "OpenSSL 1.1.1",
                "Opera 57",
                "Safari 12.1",
            ),
        ),
        "intermediate": MozillaPolicy(
            name="intermediate",
            tls_versions=("TLSv1.2", "TLSv1.3"),
            ciphers=_INTERMEDIATE_CIPHERS,
            ciphersuites=_TLS13_SUITES,
            tls_curves=_CURVES,
            server_preferred_order=False,
            dh_param_size=2048,
            needs_seclevel_0=False,
            oldest_clients=(
                "Firefox 27",
                "Android 4.4.2",
                "Chrome 31",
                "Edge",
                "IE 11 on Windows 7",
                "Java 8u31",
                "OpenSSL 1.0.1",
                "Opera 20",
                "Safari 9",
            ),
        ),
        "old": MozillaPolicy(
            name="old",
            tls_versions=("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
            ciphers=_OLD_CIPHERS,
            ciphersuites=_TLS13_SUITES,
            tls_curves=_CURVES,
            server_preferred_order=True,
            dh_param_size=1024,
            needs_seclevel_0=True,
            oldest_clients=(
                "Firefox 1",
                "Android 2.3",
                "Chrome 1",
                "Edge 12",
                "IE8 on Windows XP",
                "Java 6",
                "OpenSSL 0.9.8",
                "Opera 5",
                "Safari 1",
            ),
        ),
    }
)
"""The three configurations by name; read-only."""


def policy(name: TlsPolicy) -> MozillaPolicy:
    """The configuration called `name` (the validated `console.tls_policy`)."""
    return POLICIES[name]
