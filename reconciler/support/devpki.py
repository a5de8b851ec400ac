"""Throwaway PKI for the demo, tests and benchmarks: generated at run time, never committed."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec256", "ec384", "ec521", "ec192", "rsa1024", "rsa2048", "rsa3072", "dsa2048"]

_CURVES: dict[str, ec.EllipticCurve] = {
    "ec192": ec.SECP192R1(),
    "ec256": ec.SECP256R1(),
    "ec384": ec.SECP384R1(),
    "ec521": ec.SECP521R1(),
}


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as objects and as PEM."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def encrypted_key_pem(self, password: bytes = b"secret") -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def new_key(key_type: KeyType = "ec256") -> CertificateIssuerPrivateKeyTypes:
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    return _dsa_key(int(key_type[3:]))


def _dsa_key(bits: int) -> CertificateIssuerPrivateKeyTypes:
    """A DSA key, for the tests that prove the reconciler refuses one. cryptography deprecates
    DSA and warns on every use: this one deliberate use is the only place that warning is
    expected, so it is silenced here and nowhere else."""
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        from cryptography.hazmat.primitives.asymmetric import dsa

        return dsa.generate_private_key(key_size=bits)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca(
    name: str = "Reconciler Throwaway CA",
    *,
    key_type: KeyType = "ec256",
    issuer: Issued | None = None,
    days: int = 3650,
    not_before: dt.datetime | None = None,
) -> Issued:
    """A CA certificate: self-signed (a root) or, with `issuer`, an intermediate."""
    key = new_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or _now() - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, _hash_for(signer)), key)


def issue(
    ca: Issued | None,
    common_name: str = "gateway.test",
    *,
    sans: Sequence[str] = ("localhost", "127.0.0.1"),
    key_type: KeyType = "ec256",
    days: int = 365,
    not_before: dt.datetime | None = None,
    eku: Sequence[Literal["server", "client"]] | None = ("server", "client"),
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> Issued:
    """A leaf certificate signed by `ca`, or self-signed when `ca` is None."""
    key = key or new_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = not_before or _now() - dt.timedelta(hours=1)
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if eku is not None:
        oids = {
            "server": ExtendedKeyUsageOID.SERVER_AUTH,
            "client": ExtendedKeyUsageOID.CLIENT_AUTH,
        }
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([oids[usage] for usage in eku]), critical=False
        )
    signer = ca.key if ca else key
    return Issued(builder.sign(signer, _hash_for(signer)), key)


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # EdDSA signs without a separate hash; RSA, EC and DSA take SHA-256.
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )


def write_demo_identity(directory: str, common_name: str = "gateway.demo.test") -> None:
    """Write a throwaway root CA, intermediate and leaf: ca.pem, cert.pem (leaf+intermediate),
    key.pem (0600). For the demo only: nothing here is ever committed."""
    import os

    root = make_ca("Reconciler Demo Root CA")
    intermediate = make_ca("Reconciler Demo Intermediate CA", issuer=root, days=1825)
    leaf = issue(intermediate, common_name, sans=(common_name, "localhost", "127.0.0.1"), days=90)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "ca.pem"), "wb") as handle:
        handle.write(root.cert_pem)
    with open(os.path.join(directory, "cert.pem"), "wb") as handle:
        handle.write(leaf.cert_pem + intermediate.cert_pem)
    key_path = os.path.join(directory, "key.pem")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(leaf.key_pem)


if __name__ == "__main__":
    import sys

    write_demo_identity(sys.argv[1] if len(sys.argv) > 1 else "desired-state/tls")
