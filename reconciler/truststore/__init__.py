"""The operating system's trust store: the managed entries and the refresh every backend
shares (`base`), the debian and rhel bundle backends and the choice by settings (`backends`), the
OpenSSL CApath directory (`directory`) and its hash links, made in process as `openssl rehash`
makes them (`hashlinks`, `buckets`, `x509info`), and certificates read from PEM files.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.truststore.backends import trust_store_from_settings
    from reconciler.truststore.base import managed_files, managed_paths
    from reconciler.truststore.certfiles import certificates_in
    from reconciler.truststore.directory import TrustLinks

__all__ = [
    "certificates_in",
    "managed_files",
    "managed_paths",
    "trust_store_from_settings",
    "TrustLinks",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "trust_store_from_settings": "backends",
        "managed_files": "base",
        "managed_paths": "base",
        "certificates_in": "certfiles",
        "TrustLinks": "directory",
    },
)
