"""Target contents from the desired state (ssl.conf, JSON, PEM bundles): pure and deterministic.

render() is the step between validation and planning: it turns a validated DesiredState and the
Layout taken from the settings into the exact bytes every managed file must hold.
Equal inputs give equal bytes, whatever the order the loader found trust files or profiles in, so
a commit that changes nothing relevant changes no target and restarts nothing.
"""

from __future__ import annotations

import hashlib
import json
import operator
import posixpath
import re
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from pathlib import PurePosixPath

from reconciler.core.desired import (
    CertInfo,
    DesiredState,
    Identity,
    Kind,
    Profile,
    TlsPolicy,
    TrustEntry,
)
from reconciler.core.layout import RootLayout
from reconciler.core.memo import Memo
from reconciler.core.mozilla import GUIDELINES_VERSION, policy
from reconciler.errors import SettingsError


@dataclass(frozen=True, slots=True)
class Layout:
    """Where targets go and how they look; everything rendering needs from the settings."""

    root: PurePosixPath
    trust_dir: PurePosixPath
    trust_prefix: str = "reconciler-"
    ssl_on: bool = False
    key_mode: int = 0o600
    gid: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One managed file as it must be. `content` None means the file must not exist."""

    path: str
    kind: Kind
    mode: int
    content: bytes | None = field(repr=False)
    secret: bool = False
    """True when the content holds private key material (never printed, staged 0600)."""
    certs: tuple[CertInfo, ...] = ()
    """Certificates in the content, for plan output and the audit log."""
    gid: int | None = None
    sha256: str | None = field(init=False, repr=False, compare=False)
    """Hex SHA-256 of `content` (None with it): computed once, as rendering caches targets, not
    by every plan and record of every pass (every trust file at each of a daemon's passes)."""

    def __post_init__(self) -> None:
        content = self.content
        sha = hashlib.sha256(content).hexdigest() if content is not None else None
        object.__setattr__(self, "sha256", sha)


PUBLIC_MODE = 0o644

# Characters nginx would not read back as the same path inside a double-quoted argument: `$`
# starts a variable (ssl_certificate takes variables since 1.15.9) and cannot be escaped, a quote
# or backslash would need escaping, and control characters have no business in a path.
_NGINX_UNSAFE = re.compile(r'[$"\\\x00-\x1f\x7f]')


# A daemon renders the same thousands of trust entries and profiles pass after pass: the values
# are frozen and hashable, so the work is kept by value (bounded), never by identity.

_PROFILE_LEVEL = 2
"""How deep each profile's object sits in server-profiles.json (`{"profiles": [HERE]}`)."""
_fragments: Memo[tuple[Profile, str], str] = Memo(16384)


def _profiles_json(profiles: tuple[Profile, ...], secrets_dir: str) -> bytes:
    """`_json({"profiles": [...]})`, each profile's object rendered once and kept: one changed
    profile of thousands re-renders that one."""
    if not profiles:
        return _json({"profiles": []})
    inner = "\n" + "  " * _PROFILE_LEVEL
    parts = ['{\n  "profiles": [']
    for number, profile in enumerate(profiles):
        key = (profile, secrets_dir)
        fragment = _fragments.get(key)
        if fragment is None:  # a new or changed profile
            out: list[str] = []
            _indented(_profile_entry(profile, secrets_dir), _PROFILE_LEVEL, out)
            fragment = _fragments.put(key, "".join(out))
        parts.append(("," if number else "") + inner + fragment)
    parts.append("\n  ]\n}\n")
    return "".join(parts).encode("ascii")


def _profile_entry(p: Profile, secrets_dir: str) -> dict[str, object]:
    """The full form (type, mode, servers, credential files) with the first server's fields at
    the top level too, so readers of the one-server form keep working."""
    entry: dict[str, object] = {
        "name": p.name,
        "kind": p.kind,
        "type": p.kind,
        "mode": p.mode,
        "scheme": p.scheme,
        "host": p.host,
        "port": p.port,
        "path": p.path,
        "tls": p.tls,
        "servers": [
            {"scheme": s.scheme, "host": s.host, "port": s.port, "path": s.path, "tls": s.tls}
            for s in p.all_servers
        ],
    }
    for credential in p.credentials:
        # The entry names the managed copy, never the value nor where it was read from.
        entry[credential.field] = posixpath.join(secrets_dir, f"{p.name}.{credential.suffix}")
    return entry


def credential_targets(profiles: tuple[Profile, ...], layout: Layout) -> tuple[Target, ...]:
    """ROOT/data/secrets/NAME.password and NAME.api_key: secret, mode like key.pem. Files there
    that no profile renders any more are deleted by plan (the observer lists the directory)."""
    paths = RootLayout(layout.root)
    return tuple(
        Target(
            str(paths.credential(p.name, c.suffix)),
            "profiles",
            layout.key_mode,
            c.value.reveal(),
            secret=True,
        )
        for p in profiles
        for c in p.credentials
    )


_BY_NAME = attrgetter("name")
_BY_PATH = attrgetter("path")

_LAST_TRUST: tuple[tuple[str, str, int | None], tuple[TrustEntry, ...], list[Target]] | None = None
"""The last trust entries rendered, with where to and their targets."""


def _trust_targets(
    entries: tuple[TrustEntry, ...], trust_dir: str, prefix: str, gid: int | None
) -> list[Target]:
    """The targets of `entries`, in order. An entry validation handed over as the very object
    it was at the last render (its file unchanged) keeps its target: at each of a daemon's passes
    all but a few of thousands do, and nothing else is kept for them."""
    global _LAST_TRUST  # noqa: PLW0603 - the one render before this one
    where = (trust_dir, prefix, gid)
    last = _LAST_TRUST
    if last is None or last[0] != where:
        targets = [_trust_target(entry, trust_dir, prefix, gid) for entry in entries]
    elif len(last[1]) == len(entries):
        _, before, made = last
        if all(map(operator.is_, entries, before)):
            return made
        targets = [
            target if entry is old else _trust_target(entry, trust_dir, prefix, gid)
            for entry, old, target in zip(entries, before, made, strict=True)
        ]
    else:  # entries came or went: each one's target by the entry itself
        by_entry = {id(entry): target for entry, target in zip(last[1], last[2], strict=True)}
        targets = [
            by_entry.get(id(entry)) or _trust_target(entry, trust_dir, prefix, gid)
            for entry in entries
        ]
    _LAST_TRUST = (where, entries, targets)
    return targets


def _trust_target(entry: TrustEntry, trust_dir: str, prefix: str, gid: int | None) -> Target:
    return Target(
        # posixpath.join on the already normal str, not a PurePosixPath per entry: the same
        # string (NAME has no slash), at a fraction of the cost over many entries.
        path=posixpath.join(trust_dir, f"{prefix}{entry.name}.crt"),
        kind="trust",
        mode=PUBLIC_MODE,
        content=entry.pem,
        certs=entry.certs,
        gid=gid,
    )


def render(desired: DesiredState, layout: Layout) -> tuple[Target, ...]:
    """Every managed target, sorted by path. Trust files not rendered are deleted by plan.

    `desired` must have passed validation (console.https or inbound TLS imply an identity).
    Raises SettingsError when `layout.root` or `layout.trust_dir` cannot be rendered faithfully,
    and ValueError when two trust entries share a name (the loader must reject NAME.pem + NAME.crt).
    """
    _check_layout(layout)
    paths = RootLayout(layout.root)
    cert_path, key_path = paths.cert, paths.key
    identity = desired.identity
    console = desired.gateway.console
    trust_dir = str(layout.trust_dir)

    targets = [
        *_identity_targets(identity, layout.key_mode, paths),
        Target(
            path=str(paths.ssl_conf),
            kind="console",
            mode=PUBLIC_MODE,
            content=(
                render_ssl_conf(
                    console.tls_policy, cert_path=cert_path, key_path=key_path, ssl_on=layout.ssl_on
                )
                if console.https
                else None
            ),
        ),
        Target(
            path=str(paths.smtp_inbound),
            kind="smtp_inbound",
            mode=PUBLIC_MODE,
            content=_json(
                {
                    "tls": desired.gateway.smtp_inbound.tls,
                    "cert_file": str(cert_path) if identity is not None else None,
                    "key_file": str(key_path) if identity is not None else None,
                }
            ),
        ),
        Target(
            path=str(paths.server_profiles),
            kind="profiles",
            mode=PUBLIC_MODE,
            content=_profiles_json(
                tuple(sorted(desired.profiles, key=_BY_NAME)), str(paths.secrets)
            ),
        ),
        *credential_targets(desired.profiles, layout),
        *_trust_targets(desired.trust, trust_dir, layout.trust_prefix, layout.gid),
    ]
    rendered = [t.path for t in targets]
    if len(set(rendered)) != len(rendered):
        duplicates = sorted({p for p in rendered if rendered.count(p) > 1})
        raise ValueError(f"two desired entries render to the same target: {duplicates}")
    gid = layout.gid
    return tuple(
        sorted((t if t.gid == gid else replace(t, gid=gid) for t in targets), key=_BY_PATH)
    )


def _identity_targets(
    identity: Identity | None, key_mode: int, paths: RootLayout[PurePosixPath]
) -> tuple[Target, ...]:
    certs = (identity.leaf, *identity.chain) if identity is not None else ()
    key = _ends_with_newline(identity.key_pem.reveal()) if identity is not None else None
    cert = _ends_with_newline(identity.cert_pem) if identity is not None else None
    bundle = key + cert if key is not None and cert is not None else None
    return (
        Target(str(paths.key), "identity", key_mode, key, secret=True),
        Target(str(paths.cert), "identity", PUBLIC_MODE, cert, certs=certs),
        # tls.pem is for daemons that take key and chain in one file (key first).
        Target(str(paths.bundle), "identity", key_mode, bundle, True, certs),
    )


def render_ssl_conf(
    tls_policy: TlsPolicy,
    *,
    cert_path: PurePosixPath,
    key_path: PurePosixPath,
    ssl_on: bool,
) -> bytes:
    """The console's nginx include for one Mozilla policy; valid inside a `server {}` block."""
    moz = policy(tls_policy)
    lines = [
        f"# Managed by reconciler: edits are overwritten. Mozilla Server Side TLS "
        f"{GUIDELINES_VERSION}, {moz.name} policy.",
        "# Include inside the console's server {} block.",
        "",
    ]
    if ssl_on:
        lines += [
            "# The gateway's documented form; nginx removed this directive in 1.25.1.",
            "ssl on;",
        ]
    lines += [
        f'ssl_certificate "{cert_path}";',
        f'ssl_certificate_key "{key_path}";',
        "",
        f"ssl_protocols {' '.join(moz.tls_versions)};",
    ]
    if moz.ciphers:
        ciphers = ":".join(moz.ciphers)
        if moz.needs_seclevel_0:
            lines.append(
                "# OpenSSL 3 negotiates TLSv1 and TLSv1.1 only at security level 0; Mozilla's "
                "generator adds the same."
            )
            ciphers += ":@SECLEVEL=0"
        lines.append(f"ssl_ciphers {ciphers};")
    else:
        lines.append(
            "# TLSv1.3 only: OpenSSL's default suites are the policy's "
            f"({':'.join(moz.ciphersuites)})."
        )
    if any(c.startswith("DHE-") for c in moz.ciphers):
        lines.append(
            "# No ssl_dhparam: reconciler manages no DH parameter file, so nginx does not offer "
            "the DHE ciphers; clients use the others listed."
        )
    lines += [
        f"ssl_prefer_server_ciphers {'on' if moz.server_preferred_order else 'off'};",
        f"ssl_ecdh_curve {':'.join(moz.tls_curves)};",
        "",
        "ssl_session_timeout 1d;",
        "ssl_session_cache shared:MozSSL:10m;",
        "# nginx before 1.23.2 never rotates ticket keys, which would defeat forward secrecy.",
        "ssl_session_tickets off;",
    ]
    # ROOT's bytes as the file system has them (a non-ASCII ROOT is a valid path for nginx).
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def ssl_on_supported(nginx_version_output: str) -> bool:
    """Whether `ssl on;` is accepted, from the text `nginx -v` prints (removed in 1.25.1).

    Reads nginx, openresty and freenginx versions (openresty's first three numbers are its nginx
    core) and Tengine's "(nginx/X.Y.Z)". Anything else is unknown and answers False: without
    `ssl on;` the console still works where its `listen` says `ssl`, while an nginx that
    rejects the directive would refuse to start.
    """
    match = _VERSION_RE.search(nginx_version_output)
    if match is None:
        return False
    version = tuple(int(part) for part in match.groups())
    return version < (1, 25, 1)


_VERSION_RE = re.compile(r"\b(?:nginx|openresty|freenginx)/(\d+)\.(\d+)\.(\d+)")


def _check_layout(layout: Layout) -> None:
    for name, path in (("root", layout.root), ("trust_dir", layout.trust_dir)):
        if not path.is_absolute():
            raise SettingsError(f"setting {name} = {str(path)!r}: must be an absolute path")
    bad = _NGINX_UNSAFE.search(str(layout.root))
    if bad is not None:
        raise SettingsError(
            f"setting root = {str(layout.root)!r}: contains {bad.group()!r}, which nginx cannot "
            "read back in ssl.conf's certificate paths; choose a path without $, quotes, "
            "backslashes or control characters"
        )


def _json(value: object) -> bytes:
    """`json.dumps(value, sort_keys=True, indent=2, ensure_ascii=True)` and a newline, as bytes.

    ensure_ascii keeps the bytes independent of how a host name was spelled in Unicode. The
    standard library falls back to its pure-Python encoder whenever `indent` is set (slow
    once there are thousands of profiles); this writes the same text with the C encoder
    doing every scalar.
    """
    parts: list[str] = []
    _indented(value, 0, parts)
    parts.append("\n")
    return "".join(parts).encode("ascii")


def _indented(value: object, level: int, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = "\n" + "  " * (level + 1)
        out.append("{")
        for number, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"target JSON keys are str, not {key!r}")  # a bug, not input
            out.append(("," if number else "") + inner + json.dumps(key) + ": ")
            _indented(value[key], level + 1, out)
        out.append("\n" + "  " * level + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = "\n" + "  " * (level + 1)
        out.append("[")
        for number, item in enumerate(value):
            out.append(("," if number else "") + inner)
            _indented(item, level + 1, out)
        out.append("\n" + "  " * level + "]")
    elif isinstance(value, str):
        out.append(encode_basestring_ascii(value))  # what json.dumps does for a str, minus calls
    elif value is None:
        out.append("null")
    elif type(value) is int:
        out.append(int.__repr__(value))
    else:
        out.append(json.dumps(value, ensure_ascii=True))


def _ends_with_newline(pem: bytes) -> bytes:
    # Concatenating PEM blocks needs a newline between them; canonical PEM already ends with one.
    return pem if pem.endswith(b"\n") else pem + b"\n"
