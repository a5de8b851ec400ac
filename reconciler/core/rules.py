"""The registry of validation rule ids: what each checks, why, and how to fix a finding of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class RuleDoc:
    """One rule id's documentation (docs/rules.md has one entry per id, in these words)."""

    severity: Literal["error", "warning", "error or warning"]
    what: str
    why: str
    fix: str
    secret: bool = False
    """True when the rule reads a secret (the private key): `validate --no-secrets` skips it."""


def _rule(
    severity: Literal["error", "warning", "error or warning"],
    what: str,
    why: str,
    fix: str,
    *,
    secret: bool = False,
) -> RuleDoc:
    return RuleDoc(severity, what, why, fix, secret)


RULES: dict[str, RuleDoc] = {
    # -- reading the desired-state directory
    "state-unusable": _rule(
        "error",
        "The desired-state directory does not exist, is not a directory, or is empty.",
        "Without a desired state there is nothing to check or apply.",
        "Point `--state` (or the `state_dir` setting, or the DIR argument) at the directory "
        "holding `gateway.toml`.",
    ),
    "state-in-transit": _rule(
        "error",
        "The desired state kept changing while it was being read (a sync tool swapping it).",
        "A half-replaced state must never be applied; the daemon reads it again shortly.",
        "Nothing, usually: run again once the sync has finished.",
    ),
    "file-missing": _rule(
        "error",
        "A file that `gateway.toml` names (or `gateway.toml` itself) does not exist.",
        "A state that names a file it does not carry cannot be applied.",
        "Add the file, or correct the path in `gateway.toml`. Keep the private key out of git "
        "and check the repository with `validate --no-secrets`.",
    ),
    "file-unreadable": _rule(
        "error",
        "A file or folder exists but cannot be read (permissions, I/O error).",
        "The reconciler must see every input to judge the state as a whole.",
        "Fix the file's permissions or ownership so the reconciler's user can read it.",
    ),
    "file-not-regular": _rule(
        "error",
        "An input is not a regular file (a directory, FIFO, socket or device).",
        "Reading a FIFO or device could hang or return endless data; only files are read.",
        "Replace it with a regular file (or a link to one inside the state).",
    ),
    "file-too-large": _rule(
        "error",
        "An input file is larger than 1 MiB.",
        "No legitimate certificate chain, trust file or profile is that large; the limit keeps "
        "a mistake (a log, a binary) from being parsed.",
        "Check the file is the one you meant; split a huge trust bundle into several files.",
    ),
    "folder-unusable": _rule(
        "error",
        "`trust` or `profiles` is not a directory, or leads to one that does not exist.",
        "These names are reserved for the folders of trust entries and profiles.",
        "Make `trust/` and `profiles/` plain directories, or remove them.",
    ),
    "path-not-relative": _rule(
        "error",
        "An identity path in `gateway.toml` is absolute (or starts with `~`) where it must be "
        "relative to the state.",
        "Paths outside the state are only allowed for secrets mounted in a `key_dirs` entry.",
        "Write the path relative to the desired-state directory, e.g. `tls/cert.pem`.",
    ),
    "path-escape": _rule(
        "error",
        "A path or symbolic link leads outside the desired-state directory.",
        "Reading files outside the state would let a commit pull in any file of the host.",
        "Keep every file inside the state; links may only point inside it.",
    ),
    "path-invalid": _rule(
        "error",
        "A path value holds a control character or key-like text, is over 4096 characters, or "
        "points into a kubelet-private `..NAME` directory.",
        "Such a path is a mistake or an attack; a kubelet `..NAME` directory is replaced at the "
        "next volume update, so a path into it breaks silently.",
        "Write a plain relative path inside the state (or an absolute one inside key_dirs); name "
        "files through `..data` or the volume's top level, never `..2026_...` directories.",
    ),
    "key-outside-key-dirs": _rule(
        "error",
        "An absolute `identity.key` path is not inside any of the settings' `key_dirs`, or a "
        "link there leads out of it (other than certbot's, from `live/NAME` into `archive/NAME`).",
        "Absolute key paths are for secrets mounted at known places only (a Kubernetes Secret, "
        "a decrypted SOPS file, certbot's live directory), never any file of the host.",
        "Add the secret's mount directory to `key_dirs` on the gateway, or correct the path. "
        "In CI, where the secret is not mounted, use `validate --no-secrets`.",
        secret=True,
    ),
    "name-invalid": _rule(
        "error",
        "A file name in `trust/` or `profiles/` does not match `[a-z0-9][a-z0-9._-]{0,62}`.",
        "The name becomes the name of target files and profile entries on the gateway.",
        "Rename the file: lower-case letters, digits, `.`, `_` and `-`, at most 63 characters.",
    ),
    "name-duplicate": _rule(
        "error",
        "Two files in `trust/` share a NAME (`NAME.pem` and `NAME.crt`).",
        "Both would become the same trust store entry.",
        "Keep one of the two files.",
    ),
    "name-ignored": _rule(
        "warning",
        "A file in `trust/` or `profiles/` is not `NAME.pem`, `NAME.crt` or `NAME.toml`.",
        "It is ignored, which is often a typo (`partner.cer`, `relay.tml`).",
        "Rename it with the right suffix, or move it out of the folder.",
    ),
    # -- TOML
    "toml-encoding": _rule(
        "error",
        "A TOML file is not UTF-8 text.",
        "TOML files are UTF-8 by definition.",
        "Save the file as UTF-8.",
    ),
    "toml-syntax": _rule(
        "error",
        "A TOML file does not parse.",
        "Nothing in a file that does not parse can be trusted.",
        "Fix the syntax at the line and column given (quotes, brackets, `=`).",
    ),
    "toml-limits": _rule(
        "error",
        "A TOML file nests tables or arrays deeper than 32 levels, or holds an integer outside "
        "64 bits.",
        "No real setting needs either; both are ways to make a parser crash or stall.",
        "Flatten the file and use integers within -2**63 .. 2**63-1.",
    ),
    "toml-unknown-key": _rule(
        "error",
        "A TOML file has a key the format does not know.",
        "A misspelt key would otherwise be ignored silently and its default used instead.",
        "Correct the spelling (see `reconciler schema`) or remove the key.",
    ),
    "toml-missing-key": _rule(
        "error",
        "A required key is missing (`identity.cert`, `identity.key`, a profile's `url`).",
        "The state cannot be applied without it.",
        "Add the key.",
    ),
    "toml-value": _rule(
        "error",
        "A TOML value has the wrong type, is not one of the allowed values, or is out of range.",
        'TOML has real types: `"true"` is no boolean and `7.0` no integer, and a wrong value '
        "must never fall back to a default.",
        "Use the type and values the message lists (see `reconciler schema`).",
    ),
    # -- identity
    "identity-unread": _rule(
        "error",
        "`[identity]` is set but its files could not be read.",
        "An identity that cannot be read cannot be installed.",
        "See the other findings on the identity files.",
    ),
    "identity-required": _rule(
        "error",
        "`console.https = true` or `smtp_inbound.tls` other than `off` without an `[identity]`.",
        "HTTPS and STARTTLS need a certificate and key to present.",
        "Add an `[identity]`, or turn HTTPS / inbound STARTTLS off.",
    ),
    "pem-invalid": _rule(
        "error",
        "A certificate file has a broken PEM block (bad base64, a BEGIN without END).",
        "A certificate that cannot be decoded cannot be installed or trusted.",
        "Export the certificate again in PEM form; check the file was not cut short.",
    ),
    "pem-missing": _rule(
        "error",
        "A certificate file holds no PEM block at all (often binary DER).",
        "The gateway and the trust store need PEM.",
        "Convert it: `openssl x509 -inform der -in FILE -out FILE.pem`.",
    ),
    "pem-no-certificate": _rule(
        "error",
        "A certificate file holds PEM blocks, but none is a CERTIFICATE.",
        "A certificate file without a certificate is a mistake (a CSR, a key, a CRL).",
        "Put the certificate itself in the file.",
    ),
    "cert-invalid": _rule(
        "error",
        "A CERTIFICATE block is not a valid X.509 certificate (or has a zero/negative serial).",
        "Clients would refuse it, and a library upgrade could start rejecting it.",
        "Get the certificate re-issued or exported again from its source.",
    ),
    "cert-holds-key": _rule(
        "warning",
        "A certificate or trust file also holds a private key block; it is ignored.",
        "Certificate files are public: a key in them is exposed to everyone who reads the "
        "state, and it is in git history.",
        "Remove the key block from the file and rotate that key if the repository is shared.",
    ),
    "chain-order": _rule(
        "error",
        "The identity's chain is not in issuing order: a certificate is not signed by the next.",
        "TLS clients expect the leaf first, then each issuer; a wrong order or a foreign "
        "certificate breaks validation on clients.",
        "Order `cert.pem` as leaf, then its issuer, then that issuer's issuer; remove "
        "certificates that do not belong to the chain.",
    ),
    "chain-cert-validity": _rule(
        "warning",
        "An intermediate in the identity's chain is expired or not yet valid.",
        "Clients that build the chain from the file refuse an expired intermediate.",
        "Replace it with the issuer's current intermediate certificate.",
    ),
    "leaf-validity": _rule(
        "error",
        "The identity's leaf certificate is expired or not yet valid.",
        "Every client would refuse it.",
        "Install a renewed certificate (check the clock if it is 'not yet valid').",
    ),
    "leaf-min-days": _rule(
        "error",
        "The leaf expires in fewer days than `policy.min_days_valid`.",
        "Deploying a certificate about to expire only moves the outage a few days later.",
        "Renew the certificate, or lower `policy.min_days_valid` deliberately.",
    ),
    "leaf-expiring": _rule(
        "warning",
        "The leaf expires in fewer than 30 days.",
        "Renewal is due; the warning is also audited so monitoring can see it.",
        "Renew the certificate soon.",
    ),
    "leaf-self-signed": _rule(
        "error",
        "The leaf is self-signed while `policy.allow_self_signed` is false.",
        "Peers cannot validate a self-signed identity; production must use a CA-issued one.",
        "Use a certificate issued by a CA, or set `policy.allow_self_signed = true` outside "
        "production.",
    ),
    "leaf-ca": _rule(
        "error",
        "The identity's first certificate is a CA certificate (basicConstraints CA:TRUE).",
        "The digital ID must be the gateway's own leaf; a CA first usually means the chain file "
        "lists the issuer before the leaf.",
        "Put the gateway's leaf certificate first, then its issuers in order.",
    ),
    "leaf-eku": _rule(
        "warning",
        "The leaf has an Extended Key Usage without both serverAuth and clientAuth.",
        "The gateway's digital ID acts as a TLS server and a TLS client; peers may refuse a "
        "certificate not marked for the role.",
        "Request the certificate with both TLS Web Server and TLS Web Client authentication.",
    ),
    "leaf-public-key": _rule(
        "error",
        "The leaf's public key cannot be read.",
        "The key cannot be matched against it, nor used by clients.",
        "Get the certificate re-issued.",
    ),
    # -- the private key
    "key-pem": _rule(
        "error",
        "The key file is not PEM or has no PRIVATE KEY block.",
        "The gateway needs a PEM private key.",
        "Give a PEM (PKCS#8 or traditional) private key file.",
        secret=True,
    ),
    "key-count": _rule(
        "error",
        "The key file holds more than one private key.",
        "Which one matches is ambiguous.",
        "Keep only the key the certificate was issued for.",
        secret=True,
    ),
    "key-encrypted": _rule(
        "error",
        "The private key is encrypted.",
        "The gateway starts unattended and cannot ask for a passphrase.",
        "Decrypt it at deploy time (`openssl pkey`), and protect the file instead (a Secret, "
        "SOPS).",
        secret=True,
    ),
    "key-openssh": _rule(
        "error",
        "The key is an OpenSSH private key.",
        "OpenSSH keys cannot be used for TLS.",
        "Use the PEM key the certificate was issued for.",
        secret=True,
    ),
    "key-unreadable": _rule(
        "error",
        "The PRIVATE KEY block cannot be loaded as an unencrypted key.",
        "A damaged key cannot be installed.",
        "Export the key again.",
        secret=True,
    ),
    "key-type": _rule(
        "error",
        "The key type is not allowed (DSA, Ed25519, Ed448 and others).",
        "Common TLS clients do not accept them for the gateway's roles.",
        "Use RSA (2048 bits or more) or EC on P-256, P-384 or P-521.",
        secret=True,
    ),
    "key-rsa-size": _rule(
        "error",
        "An RSA key is shorter than 2048 bits.",
        "Shorter RSA keys are breakable and refused by current clients.",
        "Issue a new certificate on an RSA key of 2048 bits or more (or EC P-256).",
        secret=True,
    ),
    "key-ec-curve": _rule(
        "error",
        "An EC key is on a curve other than P-256, P-384 or P-521.",
        "Other curves are not widely supported in TLS.",
        "Issue a new certificate on a P-256, P-384 or P-521 key.",
        secret=True,
    ),
    "key-mismatch": _rule(
        "error",
        "The private key does not belong to the leaf certificate.",
        "The gateway could not complete a TLS handshake with that pair.",
        "Give the key the certificate was issued for (compare `openssl x509 -pubkey` with "
        "`openssl pkey -pubout`).",
        secret=True,
    ),
    # -- trust
    "trust-validity": _rule(
        "error",
        "A certificate in a trust file is expired or not yet valid.",
        "An expired CA cannot validate anything; trusting it is a mistake.",
        "Remove the certificate or replace it with the CA's current one.",
    ),
    "trust-not-ca": _rule(
        "warning",
        "A trust file holds a certificate that is not a CA.",
        "Trusting a server's own certificate works until the server renews it.",
        "Trust the CA that issued the server's certificate instead.",
    ),
    "trust-duplicate": _rule(
        "warning",
        "The same certificate is in two trust files (both are named).",
        "It is trusted once either way; two copies drift apart when one is renewed.",
        "Keep the certificate in one trust file.",
    ),
    # -- profiles
    "profile-url": _rule(
        "error",
        "A profile's `url` is wrong: scheme, host, port, path, query, fragment or user info.",
        "The gateway could not reach the server, or would put credentials in clear text.",
        "Write `SCHEME://HOST[:PORT]` with scheme http, https, smtp or smtps (a path only on "
        "http/https), no credentials.",
    ),
    "profile-te-missing": _rule(
        "error",
        "An `smtp://` profile has no `transport_encryption`.",
        "Whether mail to the server may go in clear text must be a decision, not a default.",
        'Set `transport_encryption = "starttls-required"` (or use `smtps://`).',
    ),
    "profile-te-not-allowed": _rule(
        "error",
        "`transport_encryption` is set on a profile whose URL is not `smtp://`.",
        "https and smtps use TLS from the first byte and http never does: the key would mean "
        "nothing.",
        "Remove the key.",
    ),
    "profile-cleartext": _rule(
        "error or warning",
        'A profile may send in clear text: `http://`, `transport_encryption = "none"` or '
        '`"starttls-optional"` (an error with `policy.require_tls_outbound = true`).',
        "Mail or API traffic could be read or changed on the way.",
        "Use `https://`, `smtps://` or `starttls-required`.",
    ),
    "profile-starttls": _rule(
        "warning",
        "An `smtp://` profile uses STARTTLS where implicit TLS (`smtps://`) is preferred.",
        "Implicit TLS cannot be downgraded by stripping the STARTTLS offer.",
        "Use `smtps://HOST:465` if the server supports it.",
    ),
    "profile-servers": _rule(
        "error",
        "A profile gives both `url` and `servers`, neither, the same server twice, or a `mode` "
        "with only one server.",
        "A profile is one or more distinct servers in order of preference; a failover or "
        "round-robin mode over one server means nothing and usually hides a missing entry.",
        "Write `url` for one server or `servers = [...]` for several, each once; set `mode` only "
        "with two or more servers.",
    ),
    "profile-type": _rule(
        "error",
        "A profile's `type` does not match its servers' schemes, or its servers mix types.",
        "SMTP, Core and Vault servers are used differently; one profile holds one service type.",
        "Use smtp/smtps URLs for `smtp`, http/https for `core` and `vault`, and split mixed "
        "servers into one profile per type.",
    ),
    "profile-core-port": _rule(
        "warning",
        "A Core profile's server gives no port, so the gateway's Core default 8008 is used.",
        "HTTPS usually means port 443, but the gateway's Core listens on 8008: a URL without a "
        "port is easily read as the wrong one.",
        "Write the port explicitly, e.g. `https://core.example.com:443` or `:8008`.",
    ),
    "credential-ref": _rule(
        "error",
        "A `password_file` or `api_key_file` is on the wrong profile type, is not an absolute "
        "path, holds a control character or key-like text, or points into a kubelet-private "
        "`..NAME` directory.",
        "Credentials are read from mounted secrets (key_dirs), never from the desired state; "
        "an SMTP password means nothing on a Vault profile.",
        "Use `password_file` on smtp profiles and `api_key_file` on vault profiles, as absolute "
        "paths inside one of the settings' key_dirs.",
    ),
    "credential-file": _rule(
        "error",
        "A credential file is missing, unreadable, empty, over the size limit, or outside "
        "key_dirs.",
        "The gateway could not authenticate to the server with it.",
        "Mount the secret so the file exists inside one of key_dirs, non-empty and small; "
        "`validate --no-secrets` skips this check in CI.",
        secret=True,
    ),
    # -- fleet repositories
    "fleet-invalid": _rule(
        "error",
        "`fleet.toml` or a shared layer is wrong: `shared` not a list of directories inside the "
        "repository, a layer listed twice or missing, too many layers, or `[identity]` in a "
        "shared `gateway.toml`.",
        "Every gateway of the fleet is composed from these layers; a wrong layer is every "
        "gateway's mistake.",
        "List existing directories relative to the repository root (not `gateways/`, no `..`), "
        "each once, and keep `[identity]` in `gateways/NAME/gateway.toml`.",
    ),
}


def secret_rules() -> tuple[str, ...]:
    """The rules `validate --no-secrets` does not run, in registry order."""
    return tuple(rule for rule, doc in RULES.items() if doc.secret)
