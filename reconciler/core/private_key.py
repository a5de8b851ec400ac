"""The identity's private key from PEM bytes: one unencrypted RSA or EC key of allowed size."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from reconciler.core.certificates import CRYPTO_ERRORS
from reconciler.core.collect import Findings
from reconciler.core.key_algorithm import EC, RSA, key_algorithm
from reconciler.core.pem import PemBlock, PemError, encode_pem, parse_pem
from reconciler.core.secret import SecretBytes, is_key_label

KEY_FIELD = "identity.key"
MIN_RSA_BITS = 2048
ALLOWED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_KEY_ADVICE = "use RSA (2048 bits or more) or EC on P-256, P-384 or P-521"


def read_key(
    key_data: SecretBytes, file: str, out: Findings
) -> tuple[SecretBytes, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] | None:
    """The canonical key PEM and the loaded key, or None with the reasons recorded."""
    block = _key_block(key_data, file, out)
    if block is None:
        return None
    # Decided by type before loading: only RSA and EC keys reach cryptography. Ed25519/Ed448
    # (and X25519/X448) are not accepted by common TLS clients for server certificates, so the
    # digital ID would not work as both server and client; DSA is gone from TLS 1.3.
    algorithm = key_algorithm(block.label, block.der)
    if algorithm is not None and algorithm not in (RSA, EC):
        out.error(
            file, KEY_FIELD, f"{algorithm} keys are not allowed; {_KEY_ADVICE}", rule="key-type"
        )
        return None
    canonical = encode_pem(block.label, block.der)
    try:
        private_key = serialization.load_pem_private_key(canonical, password=None)
    except CRYPTO_ERRORS:
        # cryptography's message is not shown: it is not needed and may echo parser state.
        out.error(
            file,
            KEY_FIELD,
            f"the {block.label} block (line {block.line}) is not a readable unencrypted "
            "private key",
            rule="key-unreadable",
        )
        return None
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_RSA_BITS:
            out.error(
                file,
                KEY_FIELD,
                f"RSA key of {private_key.key_size} bits is too small; "
                f"at least {MIN_RSA_BITS} bits are required",
                rule="key-rsa-size",
            )
            return None
        return SecretBytes(canonical), private_key
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        curve = private_key.curve.name
        if curve not in ALLOWED_CURVES:
            out.error(
                file,
                KEY_FIELD,
                f"EC curve {curve} is not allowed; use P-256, P-384 or P-521",
                rule="key-ec-curve",
            )
            return None
        return SecretBytes(canonical), private_key
    # The label or OID said RSA or EC and the DER loaded as something else.
    kind = type(private_key).__name__.removesuffix("PrivateKey") or "unknown"
    out.error(file, KEY_FIELD, f"{kind} keys are not allowed; {_KEY_ADVICE}", rule="key-type")
    return None


def _key_block(key_data: SecretBytes, file: str, out: Findings) -> PemBlock | None:
    """The file's one private key block, unencrypted and not OpenSSH; None with the reasons."""
    try:
        blocks = parse_pem(key_data.reveal())
    except PemError as exc:
        out.error(file, KEY_FIELD, f"not valid PEM: {exc}", rule="key-pem")
        return None
    if not blocks:
        out.error(
            file, KEY_FIELD, "not PEM: no BEGIN line of a private key block found", rule="key-pem"
        )
        return None
    keys = [b for b in blocks if is_key_label(b.label)]
    if not keys:
        found = ", ".join(sorted({b.label for b in blocks}))
        out.error(file, KEY_FIELD, f"no PRIVATE KEY block (found only: {found})", rule="key-pem")
        return None
    if len(keys) > 1:
        lines = ", ".join(str(b.line) for b in keys)
        out.error(
            file,
            KEY_FIELD,
            f"holds {len(keys)} private key blocks (lines {lines}); exactly one is allowed",
            rule="key-count",
        )
        return None
    block = keys[0]
    if block.label == "ENCRYPTED PRIVATE KEY" or any(
        (name.lower() == "proc-type" and "ENCRYPTED" in value.upper()) or name.lower() == "dek-info"
        for name, value in block.headers
    ):
        out.error(
            file,
            KEY_FIELD,
            "the private key is encrypted; the gateway needs it unencrypted "
            "(decrypt it with `openssl pkey -in KEY -out KEY.plain`) and protect the file instead",
            rule="key-encrypted",
        )
        return None
    if block.label == "OPENSSH PRIVATE KEY":
        out.error(
            file,
            KEY_FIELD,
            "an OpenSSH private key cannot be used for TLS; give a PEM (PKCS#8) private key",
            rule="key-openssh",
        )
        return None
    return block
