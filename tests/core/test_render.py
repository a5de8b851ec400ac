"""render(): every managed target, byte for byte (the real nginx reading ssl.conf: tests/gateway).

Goldens live in tests/core/golden/; regenerate them with UPDATE_GOLDEN=1 and review the diff. They
hold no key material: the PEM targets are compared with the inputs instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.desired import (
    Identity,
    TlsPolicy,
    TrustEntry,
)
from reconciler.core.mozilla import POLICIES
from reconciler.core.render import Layout, Target, render, ssl_on_supported
from reconciler.errors import SettingsError
from reconciler.support import devpki
from tests.helpers.desired import PROFILES, cert_info, desired_state, make_identity

GOLDEN = Path(__file__).parent / "golden"
POLICY_NAMES: tuple[TlsPolicy, ...] = ("modern", "intermediate", "old")
GOLDEN_LAYOUT = Layout(
    root=PurePosixPath("/opt/gateway"),
    trust_dir=PurePosixPath("/usr/local/share/ca-certificates"),
)


# --- building desired states by hand (the loader is written elsewhere) -------------------------


@pytest.fixture(scope="module")
def identity() -> Identity:
    return make_identity()


@pytest.fixture(scope="module")
def trust() -> tuple[TrustEntry, ...]:
    entries = []
    for name in ("partner-ca", "corp-root", "relay.example"):
        ca = devpki.make_ca(f"{name} CA")
        entries.append(TrustEntry(name=name, pem=ca.cert_pem, certs=(cert_info(name, is_ca=True),)))
    return tuple(entries)


def _by_name(targets: tuple[Target, ...], layout: Layout = GOLDEN_LAYOUT) -> dict[str, Target]:
    """Targets keyed by their path relative to ROOT (trust files by their bare file name)."""
    out = {}
    for target in targets:
        path = PurePosixPath(target.path)
        key = str(path.relative_to(layout.root)) if path.is_relative_to(layout.root) else path.name
        out[key] = target
    return out


def _assert_golden(name: str, content: bytes | None) -> None:
    assert content is not None
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_bytes(content)
    assert golden.exists(), f"{golden} missing: run the tests once with UPDATE_GOLDEN=1"
    assert content.decode() == golden.read_text()


# --- goldens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ssl_on", [True, False], ids=["ssl-on", "no-ssl-on"])
@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_ssl_conf_matches_golden(identity: Identity, policy: TlsPolicy, ssl_on: bool) -> None:
    layout = replace(GOLDEN_LAYOUT, ssl_on=ssl_on)
    targets = _by_name(render(desired_state(identity, tls_policy=policy), layout))
    conf = targets["nginx/ssl.conf"]
    assert (conf.kind, conf.mode, conf.secret) == ("console", 0o644, False)
    _assert_golden(f"ssl-{policy}-{'ssl-on' if ssl_on else 'no-ssl-on'}.conf", conf.content)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_ssl_conf_names_the_files_and_follows_the_policy(
    identity: Identity, policy: TlsPolicy
) -> None:
    """Independent of the goldens: the directives a reviewer checks against Mozilla's table."""
    content = _by_name(render(desired_state(identity, tls_policy=policy), GOLDEN_LAYOUT))[
        "nginx/ssl.conf"
    ].content
    assert content is not None
    text = content.decode()
    moz = POLICIES[policy]
    assert text.splitlines()[0].startswith("# Managed by reconciler")
    assert f"{policy} policy" in text.splitlines()[0]
    assert 'ssl_certificate "/opt/gateway/data/cert.pem";' in text
    assert 'ssl_certificate_key "/opt/gateway/data/key.pem";' in text
    assert f"ssl_protocols {' '.join(moz.tls_versions)};" in text
    assert "ssl on;" not in text
    assert "\nssl_dhparam" not in text
    prefer = "on" if policy == "old" else "off"
    assert f"ssl_prefer_server_ciphers {prefer};" in text
    if policy == "modern":
        assert "\nssl_ciphers" not in text
    else:
        assert f"ssl_ciphers {':'.join(moz.ciphers)}" in text
    assert ("@SECLEVEL=0;" in text) == (policy == "old")


def test_smtp_inbound_json_matches_golden(identity: Identity) -> None:
    target = _by_name(render(desired_state(identity, inbound="required"), GOLDEN_LAYOUT))[
        "data/smtp-inbound.json"
    ]
    assert (target.kind, target.mode, target.secret) == ("smtp_inbound", 0o644, False)
    _assert_golden("smtp-inbound.json", target.content)
    assert target.content is not None
    assert json.loads(target.content) == {
        "tls": "required",
        "cert_file": "/opt/gateway/data/cert.pem",
        "key_file": "/opt/gateway/data/key.pem",
    }


def test_smtp_inbound_json_without_identity_has_null_paths() -> None:
    target = _by_name(render(desired_state(None, https=False, inbound="off"), GOLDEN_LAYOUT))[
        "data/smtp-inbound.json"
    ]
    _assert_golden("smtp-inbound-no-identity.json", target.content)
    assert target.content is not None
    assert json.loads(target.content) == {"tls": "off", "cert_file": None, "key_file": None}


def test_server_profiles_json_matches_golden(identity: Identity) -> None:
    target = _by_name(render(desired_state(identity), GOLDEN_LAYOUT))["data/server-profiles.json"]
    assert (target.kind, target.mode, target.secret) == ("profiles", 0o644, False)
    _assert_golden("server-profiles.json", target.content)
    assert target.content is not None
    entries = json.loads(target.content)["profiles"]
    assert [e["name"] for e in entries] == sorted(p.name for p in PROFILES)
    one_server = {
        "name": "archive",
        "kind": "smtp",
        "scheme": "smtps",
        "host": "archive.example.com",
        "port": 465,
        "path": "",
        "tls": "implicit",
    }
    # The one-server form's fields stay at the top level; the full form's are added.
    assert {k: entries[0][k] for k in one_server} == one_server
    assert entries[0]["type"] == "smtp"
    assert entries[0]["mode"] == "failover"
    assert entries[0]["servers"] == [
        {k: one_server[k] for k in ("scheme", "host", "port", "path", "tls")}
    ]


def test_server_profiles_json_after_one_profile_changes_is_the_whole_file_rendered_anew() -> None:
    """Each profile's object is rendered once and kept: the file a pass writes after one of many
    profiles changed is byte for byte the file rendered from nothing (indent 2, keys sorted)."""
    many = tuple(
        replace(PROFILES[number % len(PROFILES)], name=f"p{number:03d}") for number in range(40)
    )
    render(desired_state(None, https=False, profiles=many), GOLDEN_LAYOUT)
    changed = tuple(
        replace(p, port=2525, servers=tuple(replace(s, port=2525) for s in p.servers))
        if p.name == "p007"
        else p
        for p in many
    )
    target = _by_name(render(desired_state(None, https=False, profiles=changed), GOLDEN_LAYOUT))[
        "data/server-profiles.json"
    ]
    assert target.content is not None
    entries = json.loads(target.content)["profiles"]
    assert [e["name"] for e in entries] == [f"p{n:03d}" for n in range(40)]
    assert entries[7]["port"] == 2525
    assert entries[6]["port"] != 2525
    expected = json.dumps(json.loads(target.content), sort_keys=True, indent=2) + "\n"
    assert target.content == expected.encode("ascii")


def test_server_profiles_json_is_present_and_empty_without_profiles() -> None:
    target = _by_name(render(desired_state(None, https=False, profiles=()), GOLDEN_LAYOUT))[
        "data/server-profiles.json"
    ]
    assert target.content == b'{\n  "profiles": []\n}\n'


# --- PEM targets against their inputs ---------------------------------------------------------


def test_identity_targets_hold_the_input_pem(identity: Identity) -> None:
    layout = replace(GOLDEN_LAYOUT, key_mode=0o640, gid=4242)
    targets = _by_name(render(desired_state(identity), layout))
    key, cert, bundle = targets["data/key.pem"], targets["data/cert.pem"], targets["data/tls.pem"]

    assert key.content == identity.key_pem.reveal()
    assert cert.content == identity.cert_pem
    assert bundle.content == identity.key_pem.reveal() + identity.cert_pem
    assert (key.mode, cert.mode, bundle.mode) == (0o640, 0o644, 0o640)
    assert (key.secret, cert.secret, bundle.secret) == (True, False, True)
    assert {key.kind, cert.kind, bundle.kind} == {"identity"}
    assert cert.certs == bundle.certs == (identity.leaf, *identity.chain)
    assert key.certs == ()
    assert all(t.gid == 4242 for t in targets.values())


def test_bundle_parts_parse_back_to_the_same_key_and_chain(identity: Identity) -> None:
    bundle = _by_name(render(desired_state(identity), GOLDEN_LAYOUT))["data/tls.pem"].content
    assert bundle is not None
    certs = x509.load_pem_x509_certificates(bundle)
    assert [c.subject.rfc4514_string() for c in certs] == [
        "CN=gateway.test",
        "CN=Render Intermediate CA",
    ]
    assert bundle.startswith(b"-----BEGIN " + b"PRIVATE KEY-----\n")  # split: not a key file


def test_no_identity_means_identity_files_must_not_exist() -> None:
    targets = _by_name(render(desired_state(None, https=False, inbound="off"), GOLDEN_LAYOUT))
    for name in ("data/key.pem", "data/cert.pem", "data/tls.pem"):
        assert targets[name].content is None, name
    assert targets["nginx/ssl.conf"].content is None


def test_https_off_means_ssl_conf_must_not_exist(identity: Identity) -> None:
    targets = _by_name(render(desired_state(identity, https=False), GOLDEN_LAYOUT))
    assert targets["nginx/ssl.conf"].content is None
    assert targets["nginx/ssl.conf"].kind == "console"
    assert targets["data/cert.pem"].content == identity.cert_pem


def test_trust_entries_become_prefixed_crt_files(trust: tuple[TrustEntry, ...]) -> None:
    layout = replace(GOLDEN_LAYOUT, trust_prefix="acme-", gid=7)
    targets = [
        t
        for t in render(desired_state(None, https=False, trust=trust), layout)
        if t.kind == "trust"
    ]
    assert [t.path for t in targets] == [
        "/usr/local/share/ca-certificates/acme-corp-root.crt",
        "/usr/local/share/ca-certificates/acme-partner-ca.crt",
        "/usr/local/share/ca-certificates/acme-relay.example.crt",
    ]
    by_path = {f"/usr/local/share/ca-certificates/acme-{e.name}.crt": e for e in trust}
    for target in targets:
        entry = by_path[target.path]
        assert (target.content, target.certs) == (entry.pem, entry.certs)
        assert (target.mode, target.secret, target.gid) == (0o644, False, 7)


def test_a_render_after_one_trust_entry_changed_renders_that_entry_anew(
    trust: tuple[TrustEntry, ...],
) -> None:
    """Renders in a row (a daemon's passes) keep the targets of entries handed over unchanged
    and render the one that changed, wherever it sits, and any change of place renders all."""

    def trust_targets(entries: tuple[TrustEntry, ...], layout: Layout) -> dict[str, Target]:
        rendered = render(desired_state(None, https=False, trust=entries), layout)
        # By file name without the prefix: partner-ca.crt, corp-root.crt, relay.example.crt
        return {
            t.path.rpartition("/")[2].split("-", 1)[1]: t for t in rendered if t.kind == "trust"
        }

    first = trust_targets(trust, GOLDEN_LAYOUT)
    changed = replace(trust[1], pem=trust[0].pem, certs=trust[0].certs)
    second = trust_targets((trust[0], changed, trust[2]), GOLDEN_LAYOUT)
    same = ("partner-ca.crt", "relay.example.crt")
    assert all(second[name] is first[name] for name in same)
    assert second["corp-root.crt"].path == first["corp-root.crt"].path
    assert second["corp-root.crt"].content == trust[0].pem != first["corp-root.crt"].content
    assert second["corp-root.crt"].sha256 != first["corp-root.crt"].sha256
    back = trust_targets(trust, GOLDEN_LAYOUT)
    assert back["corp-root.crt"].content == trust[1].pem
    moved = trust_targets(trust, replace(GOLDEN_LAYOUT, trust_prefix="acme-", gid=7))
    assert all("/acme-" in t.path and t.gid == 7 for t in moved.values())
    fewer = trust_targets(trust[1:], GOLDEN_LAYOUT)
    assert sorted(t.content for t in fewer.values()) == sorted(e.pem for e in trust[1:])
    again = trust_targets(trust[1:], replace(GOLDEN_LAYOUT, gid=7))
    more = trust_targets(trust, replace(GOLDEN_LAYOUT, gid=7))  # one came: the others stay
    assert all(more[name] is again[name] for name in again)
    assert more["partner-ca.crt"].content == trust[0].pem


def test_the_target_set_is_fixed_and_sorted(
    identity: Identity, trust: tuple[TrustEntry, ...]
) -> None:
    targets = render(desired_state(identity, trust=trust), GOLDEN_LAYOUT)
    paths = [t.path for t in targets]
    assert paths == sorted(paths)
    assert set(_by_name(targets)) == {
        "data/cert.pem",
        "data/key.pem",
        "data/server-profiles.json",
        "data/smtp-inbound.json",
        "data/tls.pem",
        "nginx/ssl.conf",
        "reconciler-corp-root.crt",
        "reconciler-partner-ca.crt",
        "reconciler-relay.example.crt",
    }


def test_target_repr_never_shows_key_material(identity: Identity) -> None:
    targets = render(desired_state(identity), GOLDEN_LAYOUT)
    body = identity.key_pem.reveal().splitlines()[1].decode()
    assert body not in repr(targets)
    assert body not in str(targets)


# --- determinism ------------------------------------------------------------------------------


def test_rendering_twice_gives_the_same_bytes(
    identity: Identity, trust: tuple[TrustEntry, ...]
) -> None:
    state = desired_state(identity, trust=trust)
    assert render(state, GOLDEN_LAYOUT) == render(state, GOLDEN_LAYOUT)


@given(data=st.data())
def test_input_order_does_not_change_any_byte(
    identity: Identity, trust: tuple[TrustEntry, ...], data: st.DataObject
) -> None:
    expected = render(desired_state(identity, trust=trust), GOLDEN_LAYOUT)
    shuffled_trust = tuple(data.draw(st.permutations(trust)))
    shuffled_profiles = tuple(data.draw(st.permutations(PROFILES)))
    state = desired_state(identity, trust=shuffled_trust, profiles=shuffled_profiles)
    assert render(state, GOLDEN_LAYOUT) == expected


def test_an_unrelated_change_leaves_other_targets_alone(identity: Identity) -> None:
    before = _by_name(render(desired_state(identity, tls_policy="intermediate"), GOLDEN_LAYOUT))
    after = _by_name(render(desired_state(identity, tls_policy="modern"), GOLDEN_LAYOUT))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"nginx/ssl.conf"}


# --- layout errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root", "words"),
    [
        ("opt/gateway", "absolute"),
        ("/opt/gate$way", "'$'"),
        ('/opt/gate"way', "quotes"),
        ("/opt/gate\nway", "control"),
    ],
    ids=["relative", "dollar", "quote", "newline"],
)
def test_a_root_nginx_cannot_read_is_a_settings_error(
    identity: Identity, root: str, words: str
) -> None:
    layout = replace(GOLDEN_LAYOUT, root=PurePosixPath(root))
    with pytest.raises(SettingsError, match="setting root") as caught:
        render(desired_state(identity), layout)
    assert words in str(caught.value)


def test_two_trust_entries_with_one_name_are_refused(trust: tuple[TrustEntry, ...]) -> None:
    with pytest.raises(ValueError, match=r"reconciler-corp-root\.crt"):
        render(desired_state(None, https=False, trust=(*trust, trust[1])), GOLDEN_LAYOUT)


# --- ssl on detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "supported"),
    [
        ("nginx version: nginx/1.22.1", True),
        ("nginx version: nginx/1.14.2\n", True),
        ("nginx version: nginx/1.25.0", True),
        ("nginx version: nginx/1.25.1", False),
        ("nginx version: nginx/1.26.2 (Ubuntu)", False),
        ("nginx version: nginx/2.0.0", False),
        ("nginx version: openresty/1.21.4.1", True),
        ("nginx version: openresty/1.25.3.1", False),
        ("nginx version: freenginx/1.25.3", False),
        ("Tengine version: Tengine/2.3.3 (nginx/1.18.0)", True),
        ("Angie version: Angie/1.4.0", False),
        ("", False),
        ("nginx: command not found", False),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_ssl_on_supported(output: str, supported: bool) -> None:
    assert ssl_on_supported(output) is supported
