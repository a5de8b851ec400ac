"""Throwaway certificates for the benchmarks: identities, and thousands of trust-entry CAs, cached.

Ten thousand CA certificates each with its own key take minutes to make; the trust entries are
instead all signed by one bench root and share one subject key (a CA certificate per entry, with
its own name and serial: what validation and the trust store care about). They are cached under
bench/results/cache/ (git-ignored) keyed by count, so later runs start at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from reconciler.support import devpki

CACHE = Path(__file__).resolve().parent / "results" / "cache"


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    """What `tls/cert.pem` and `tls/key.pem` hold for one digital ID."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    """The issuing intermediate: a CA certificate to use as a trust entry."""


def identities(count: int) -> list[IdentityFiles]:
    """`count` leaves from one throwaway root and intermediate (never written to the cache)."""
    root = devpki.make_ca("Bench Root CA")
    intermediate = devpki.make_ca("Bench Intermediate CA", issuer=root)
    found = []
    for number in range(count):
        leaf = devpki.issue(intermediate, f"gateway{number}.bench.test")
        found.append(
            IdentityFiles(
                leaf.cert_pem + intermediate.cert_pem, leaf.key_pem, intermediate.cert_pem
            )
        )
    return found


def trust_pems(count: int) -> list[bytes]:
    """`count` distinct CA certificates, PEM, one per trust entry; cached by count."""
    directory = CACHE / f"trust-{count}"
    done = directory / "complete"
    if done.exists():
        return [path.read_bytes() for path in sorted(directory.glob("*.pem"))]
    pems = _make_trust_pems(count)
    directory.mkdir(parents=True, exist_ok=True)
    for number, pem in enumerate(pems):
        (directory / f"{number:06d}.pem").write_bytes(pem)
    done.write_text(f"{count}\n")
    return pems


def _make_trust_pems(count: int) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    root_key = ec.generate_private_key(ec.SECP256R1())
    subject_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Trust Root")])
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    constraints = x509.BasicConstraints(ca=True, path_length=None)
    pems = []
    for number in range(count):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bench Trust CA {number}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer)
            .public_key(subject_key)
            .serial_number(number + 1)
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=3650))
            .add_extension(constraints, critical=True)
            .sign(root_key, hashes.SHA256())
        )
        pems.append(cert.public_bytes(serialization.Encoding.PEM))
    return pems
