"""The command line in this process, and one broken desired state per error and warning rule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.support import devpki
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki, StateDir

Mutation = Callable[[StateDir, Pki, Path], None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_cli(
    box: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The command line in this process (fast); `Sandbox.run` is the child-process twin."""
    box.write_config()
    monkeypatch.setenv("RECONCILER_CONFIG", str(box.config))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _gateway_replace(old: str, new: str) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        text = (state.path / "gateway.toml").read_text()
        assert old in text, old
        state.write("gateway.toml", text.replace(old, new))

    return mutate


def _write(rel: str, data: Callable[[Pki], bytes]) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        state.write(rel, data(pki))

    return mutate


def _leaf(**kwargs: object) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        leaf = devpki.issue(pki.intermediate, "gateway.test", **kwargs)  # type: ignore[arg-type]
        state.identity(pki, leaf)

    return mutate


def _symlink_out(state: StateDir, pki: Pki, tmp: Path) -> None:
    outside = tmp / "outside.pem"
    outside.write_bytes(pki.chain())
    (state.path / "tls/cert.pem").unlink()
    (state.path / "tls/cert.pem").symlink_to(outside)


def absolute_key(state: StateDir, pki: Pki, tmp: Path) -> None:
    key = tmp / "secrets" / "key.pem"
    key.parent.mkdir()
    key.write_bytes(pki.leaf.key_pem)
    _gateway_replace('key = "tls/key.pem"', f'key = "{key}"')(state, pki, tmp)


def _no_identity(extra: str) -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        state.gateway(extra)

    return mutate


def _profile(text: str, name: str = "bad") -> Mutation:
    def mutate(state: StateDir, pki: Pki, tmp: Path) -> None:
        state.profile(name, text)

    return mutate


def _self_signed(state: StateDir, pki: Pki, tmp: Path) -> None:
    leaf = devpki.issue(None)
    state.write("tls/cert.pem", leaf.cert_pem)
    state.write("tls/key.pem", leaf.key_pem)


def _expired_ca(pki: Pki) -> bytes:
    return devpki.make_ca("Expired CA", not_before=_now() - dt.timedelta(days=30), days=10).cert_pem


def _wrong_order(pki: Pki) -> bytes:
    return pki.intermediate.cert_pem + pki.leaf.cert_pem


def _not_pem(pki: Pki) -> bytes:
    return b"this is not a certificate\n"


def _key_only(pki: Pki) -> bytes:
    return pki.leaf.key_pem


#: One case per desired-state error rule: (mutation, file named, words in the reason).
REJECTED: dict[str, tuple[Mutation, str, str]] = {
    "toml-syntax": (
        _write("gateway.toml", lambda p: b"[console\nhttps = true\n"),
        "gateway.toml",
        "TOML",
    ),
    "unknown-key": (
        _gateway_replace("https = true", "https = true\nhttp2 = true"),
        "gateway.toml",
        "console.http2",
    ),
    "wrong-type": (
        _gateway_replace("https = true", 'https = "yes"'),
        "gateway.toml",
        "console.https",
    ),
    "bad-value": (
        _gateway_replace('tls_policy = "intermediate"', 'tls_policy = "strict"'),
        "gateway.toml",
        "console.tls_policy",
    ),
    "not-utf8": (
        _write("gateway.toml", lambda p: b"[console]\nhttps = true # \xff\n"),
        "gateway.toml",
        "UTF-8",
    ),
    "over-1mib": (
        _write("trust/big.pem", lambda p: b"#" * (1024 * 1024 + 1)),
        "trust/big.pem",
        "1 MiB",
    ),
    "path-escape": (
        _gateway_replace('cert = "tls/cert.pem"', 'cert = "../outside.pem"'),
        "../outside.pem",
        "outside",
    ),
    "symlink-escape": (_symlink_out, "tls/cert.pem", "outside"),
    "absolute-key-outside-key-dirs": (absolute_key, "gateway.toml", "key_dirs"),
    "missing-gateway": (lambda s, p, t: s.remove("gateway.toml"), "gateway.toml", "missing"),
    "cert-not-pem": (_write("tls/cert.pem", _not_pem), "tls/cert.pem", "PEM"),
    "cert-no-certificate": (_write("tls/cert.pem", _key_only), "tls/cert.pem", "no CERTIFICATE"),
    "chain-out-of-order": (_write("tls/cert.pem", _wrong_order), "tls/cert.pem", "order"),
    "key-not-pem": (_write("tls/key.pem", _not_pem), "tls/key.pem", "PEM"),
    "key-encrypted": (
        _write("tls/key.pem", lambda p: p.leaf.encrypted_key_pem()),
        "tls/key.pem",
        "encrypted",
    ),
    "key-dsa": (_leaf(key_type="dsa2048"), "tls/key.pem", "DSA"),
    "key-rsa-1024": (_leaf(key_type="rsa1024"), "tls/key.pem", "1024"),
    "key-mismatch": (_write("tls/key.pem", lambda p: p.leaf2.key_pem), "tls/key.pem", "match"),
    "leaf-expired": (
        _leaf(not_before=_now() - dt.timedelta(days=20), days=10),
        "tls/cert.pem",
        "expired",
    ),
    "leaf-not-yet-valid": (
        _leaf(not_before=_now() + dt.timedelta(days=2)),
        "tls/cert.pem",
        "not valid yet",
    ),
    "leaf-under-min-days": (_leaf(days=3), "tls/cert.pem", "min_days_valid"),
    "self-signed": (
        _self_signed,
        "tls/cert.pem",
        "self-signed",
    ),
    "https-without-identity": (
        _no_identity("[console]\nhttps = true\n"),
        "gateway.toml",
        "console.https",
    ),
    "inbound-tls-without-identity": (
        _no_identity('[smtp_inbound]\ntls = "required"\n'),
        "gateway.toml",
        "smtp_inbound.tls",
    ),
    "trust-not-pem": (_write("trust/broken.pem", _not_pem), "trust/broken.pem", "PEM"),
    "trust-expired": (_write("trust/old-ca.crt", _expired_ca), "trust/old-ca.crt", "expired"),
    "trust-bad-name": (
        _write("trust/Bad Name.pem", lambda p: p.root.cert_pem),
        "trust/Bad Name.pem",
        "must match",
    ),
    "profile-bad-scheme": (
        _profile('url = "ftp://files.example.com"\n'),
        "profiles/bad.toml",
        "scheme",
    ),
    "profile-bad-port": (
        _profile('url = "smtps://relay.example.com:70000"\n'),
        "profiles/bad.toml",
        "port",
    ),
    "profile-user-info": (
        _profile('url = "https://user:pw@core.example.com"\n'),
        "profiles/bad.toml",
        "user",
    ),
    "profile-query": (
        _profile('url = "https://core.example.com/?a=1"\n'),
        "profiles/bad.toml",
        "query",
    ),
    "profile-smtp-path": (
        _profile('url = "smtps://relay.example.com/inbox"\n'),
        "profiles/bad.toml",
        "path",
    ),
    "profile-missing-encryption": (
        _profile('url = "smtp://mx.example.com"\n'),
        "profiles/bad.toml",
        "transport_encryption",
    ),
    "profile-encryption-on-smtps": (
        _profile('url = "smtps://mx.example.com"\ntransport_encryption = "starttls-required"\n'),
        "profiles/bad.toml",
        "transport_encryption",
    ),
    "profile-unknown-key": (
        _profile('url = "smtps://mx.example.com"\ntimeout = 3\n'),
        "profiles/bad.toml",
        "unknown",
    ),
    "cleartext-with-require-tls-outbound": (
        lambda s, p, t: (
            _gateway_replace(
                'tls = "optional"', 'tls = "optional"\n\n[policy]\nrequire_tls_outbound = true'
            )(s, p, t),
            s.profile("plain", 'url = "http://core.example.com"\n'),
        ),
        "profiles/plain.toml",
        "require_tls_outbound",
    ),
}

#: One case per desired-state warning rule: (mutation, file named, words in the reason).
WARNED: dict[str, tuple[Mutation, str, str]] = {
    "leaf-under-30-days": (_leaf(days=20), "tls/cert.pem", "fewer than 30"),
    "eku-without-client-auth": (_leaf(eku=("server",)), "tls/cert.pem", "clientAuth"),
    "trust-non-ca": (
        _write("trust/server.pem", lambda p: p.leaf2.cert_pem),
        "trust/server.pem",
        "not a CA",
    ),
    "starttls-optional": (
        _profile('url = "smtp://mx.example.com"\ntransport_encryption = "starttls-optional"\n'),
        "profiles/bad.toml",
        "clear text",
    ),
    "smtp-none": (
        _profile('url = "smtp://mx.example.com"\ntransport_encryption = "none"\n'),
        "profiles/bad.toml",
        "none",
    ),
    "http": (_profile('url = "http://core.example.com"\n'), "profiles/bad.toml", "http"),
    "smtp-starttls-over-smtps": (
        _profile('url = "smtp://mx.example.com"\ntransport_encryption = "starttls-required"\n'),
        "profiles/bad.toml",
        "smtps",
    ),
}
