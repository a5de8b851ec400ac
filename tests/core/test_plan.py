"""The planner: applying a plan then planning again is empty; drift is told from desired change."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.desired import DesiredState
from reconciler.core.evaluate import KeySource, SourceFile, StateInput, evaluate
from reconciler.core.plan import Change, Observed, Plan, digest, plan
from reconciler.core.render import Layout, Target, render
from reconciler.core.secret import SecretBytes
from reconciler.gateway.observe import ObservationCache, Observations
from reconciler.support import devpki

NOW = dt.datetime.now(dt.UTC)
PREFIX = "reconciler-"


# -- a pool of PKI, generated once: hypothesis must not make keys per example ---------------------


@dataclass(frozen=True)
class Pool:
    identities: tuple[tuple[bytes, bytes], ...]
    """(leaf + intermediate chain, key) pairs."""
    cas: tuple[bytes, ...]


@cache
def pool() -> Pool:
    root = devpki.make_ca("Plan Test Root")
    intermediate = devpki.make_ca("Plan Test Intermediate", issuer=root)
    leaves = [devpki.issue(intermediate, f"gw{i}.test", days=400) for i in range(3)]
    return Pool(
        identities=tuple((leaf.cert_pem + intermediate.cert_pem, leaf.key_pem) for leaf in leaves),
        cas=(
            root.cert_pem,
            intermediate.cert_pem,
            devpki.make_ca("Partner CA").cert_pem,
            devpki.make_ca("Other CA").cert_pem + devpki.make_ca("Third CA").cert_pem,
        ),
    )


# -- building desired states from parts (through the real loader, so they are valid) -------------


@dataclass(frozen=True)
class Parts:
    identity: int | None
    https: bool = False
    tls_policy: str = "intermediate"
    inbound: str = "off"
    allow_self_signed: bool = False
    min_days_valid: int = 7
    require_tls_outbound: bool = False
    trust: Mapping[str, int] = field(default_factory=dict)
    """Trust entry name -> index into the pool's CAs."""
    profiles: Mapping[str, str] = field(default_factory=dict)
    """Profile name -> TOML text."""


def gateway_toml(parts: Parts) -> str:
    lines = []
    if parts.identity is not None:
        lines += ["[identity]", 'cert = "tls/cert.pem"', 'key = "tls/key.pem"']
    lines += [
        "[console]",
        f"https = {str(parts.https).lower()}",
        f'tls_policy = "{parts.tls_policy}"',
        "[smtp_inbound]",
        f'tls = "{parts.inbound}"',
        "[policy]",
        f"allow_self_signed = {str(parts.allow_self_signed).lower()}",
        f"min_days_valid = {parts.min_days_valid}",
        f"require_tls_outbound = {str(parts.require_tls_outbound).lower()}",
    ]
    return "\n".join(lines) + "\n"


def state_input(parts: Parts, *, revision: str = "rev") -> StateInput:
    chosen = pool().identities[parts.identity] if parts.identity is not None else None
    return StateInput(
        revision=revision,
        gateway=SourceFile("gateway.toml", gateway_toml(parts).encode()),
        cert=SourceFile("tls/cert.pem", chosen[0]) if chosen else None,
        key=KeySource("tls/key.pem", SecretBytes(chosen[1])) if chosen else None,
        trust=tuple(
            (name, SourceFile(f"trust/{name}.pem", pool().cas[index]))
            for name, index in sorted(parts.trust.items())
        ),
        profiles=tuple(
            (name, SourceFile(f"profiles/{name}.toml", text.encode()))
            for name, text in sorted(parts.profiles.items())
        ),
    )


def desired_from(inp: StateInput) -> DesiredState:
    evaluation = evaluate(inp, NOW)
    assert evaluation.desired is not None, evaluation.errors
    return evaluation.desired


_NAMES = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
_HOSTS = st.one_of(
    st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]{2,5}){1,2}", fullmatch=True),
    st.sampled_from(["127.0.0.1", "[::1]", "[2001:db8::25]"]),
)


@st.composite
def profile_texts(draw: st.DrawFn, strict: bool) -> str:
    schemes = ["https", "smtps", "smtp"] if strict else ["http", "https", "smtp", "smtps"]
    scheme = draw(st.sampled_from(schemes))
    host = draw(_HOSTS)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    url = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    if scheme in ("http", "https"):
        url += draw(st.from_regex(r"(/[a-z0-9]{1,6}){0,3}", fullmatch=True))
    lines = [f'url = "{url}"']
    if scheme == "smtp":
        choices = (
            ["starttls-required"] if strict else ["none", "starttls-optional", "starttls-required"]
        )
        lines.append(f'transport_encryption = "{draw(st.sampled_from(choices))}"')
    draw(st.randoms()).shuffle(lines)  # key order must not matter
    return "\n".join(lines) + "\n"


@st.composite
def valid_parts(draw: st.DrawFn) -> Parts:
    identity = draw(st.one_of(st.none(), st.integers(0, len(pool().identities) - 1)))
    has_identity = identity is not None
    strict = draw(st.booleans())
    return Parts(
        identity=identity,
        https=draw(st.booleans()) if has_identity else False,
        tls_policy=draw(st.sampled_from(["modern", "intermediate", "old"])),
        inbound=draw(st.sampled_from(["off", "optional", "required"])) if has_identity else "off",
        allow_self_signed=draw(st.booleans()),
        min_days_valid=draw(st.integers(0, 60)),
        require_tls_outbound=strict,
        trust=draw(st.dictionaries(_NAMES, st.integers(0, len(pool().cas) - 1), max_size=4)),
        profiles=draw(st.dictionaries(_NAMES, profile_texts(strict), max_size=4)),
    )


_GIDS = [None, os.getegid()] + ([65534] if os.geteuid() == 0 else [])


@st.composite
def layouts(draw: st.DrawFn, base: Path) -> Layout:
    return Layout(
        root=PurePosixPath(base / "root"),
        trust_dir=PurePosixPath(base / "trust"),
        trust_prefix=PREFIX,
        ssl_on=draw(st.booleans()),
        key_mode=draw(st.sampled_from([0o600, 0o640])),
        gid=draw(st.sampled_from(_GIDS)),
    )


# -- a tiny applier: what the transaction does, minus crash safety --------------------------------


def apply(result: Plan) -> None:
    for change in result.changes:
        path = Path(change.path)
        if change.action == "delete":
            path.unlink()
            continue
        target = change.target
        assert target is not None
        assert target.content is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_bytes(target.content)
        os.chmod(temp, target.mode)
        if target.gid is not None:
            os.chown(temp, -1, target.gid)
        os.replace(temp, path)


def plan_for(targets: Sequence[Target], layout: Layout, **kwargs: object) -> Plan:
    found = Observations.full(targets, layout, ObservationCache()).found
    return plan("rev", targets, found, **kwargs)  # type: ignore[arg-type]


def check_plan_shape(result: Plan) -> None:
    paths = [c.path for c in result.changes]
    assert paths == sorted(paths)
    assert len(set(paths)) == len(paths)
    for change in result.changes:
        if change.action == "create":
            assert change.before_sha256 is None
            assert change.after_sha256 is not None
        elif change.action == "delete":
            assert change.after_sha256 is None
            assert change.target is None
            assert change.mode is None
        else:
            assert change.before_sha256 is not None
            assert change.after_sha256 is not None
        if change.target is not None:
            assert change.target.content is not None
            assert change.after_sha256 == digest(change.target.content)


def check_disk(targets: Sequence[Target], layout: Layout, foreign: Mapping[Path, bytes]) -> None:
    for target in targets:
        path = Path(target.path)
        if target.content is None:
            assert not path.exists(), path
            continue
        info = path.lstat()
        assert path.read_bytes() == target.content
        assert info.st_mode & 0o7777 == target.mode
        if target.gid is not None:
            assert info.st_gid == target.gid
    wanted = {Path(t.path).name for t in targets if t.kind == "trust"}
    managed = {p.name for p in Path(layout.trust_dir).iterdir() if p.name.startswith(PREFIX)}
    assert managed == wanted
    for path, content in foreign.items():
        assert path.read_bytes() == content


FOREIGN = {"ca-certificates.crt": b"system bundle", "mozilla-root.crt": b"not ours"}


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_apply_then_plan_is_empty(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "trust").mkdir()
        foreign = {base / "trust" / name: content for name, content in FOREIGN.items()}
        for path, content in foreign.items():
            path.write_bytes(content)
        (base / "trust" / f"{PREFIX}left-over.crt").write_bytes(b"from an older state")

        layout = data.draw(layouts(base), label="layout")
        for step in ("first", "second"):
            parts = data.draw(valid_parts(), label=f"{step} desired state")
            layout = replace(
                layout,
                key_mode=data.draw(st.sampled_from([0o600, 0o640])),
                gid=data.draw(st.sampled_from(_GIDS)),
            )
            targets = render(desired_from(state_input(parts)), layout)
            first = plan_for(targets, layout)
            check_plan_shape(first)
            assert not any(Path(c.path).name in FOREIGN for c in first.changes)
            apply(first)
            check_disk(targets, layout, foreign)
            again = plan_for(targets, layout)
            assert again.empty, again.changes


# -- drift and desired change --------------------------------------------------------------------


STANDARD = Parts(
    identity=0,
    https=True,
    inbound="optional",
    trust={"partner": 2, "root": 0},
    profiles={"relay": 'url = "smtps://relay.example.com"\n'},
)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    (tmp_path / "trust").mkdir()
    return Layout(
        root=PurePosixPath(tmp_path / "root"), trust_dir=PurePosixPath(tmp_path / "trust")
    )


def _applied(parts: Parts, layout: Layout) -> tuple[tuple[Target, ...], dict[str, str | None]]:
    """Render and apply `parts`; return its targets and the last-applied record a pass keeps."""
    targets = render(desired_from(state_input(parts)), layout)
    apply(plan_for(targets, layout))
    last = {t.path: digest(t.content) if t.content is not None else None for t in targets}
    return targets, last


def _only(result: Plan) -> Change:
    assert len(result.changes) == 1, result.changes
    return result.changes[0]


def _path(layout: Layout, rel: str) -> Path:
    return Path(layout.root) / rel


def test_edited_target_is_drift(layout: Layout) -> None:
    targets, last = _applied(STANDARD, layout)
    inbound = _path(layout, "data/smtp-inbound.json")
    inbound.write_bytes(b'{"tls": "off"}\n')
    change = _only(plan_for(targets, layout, last_applied=last))
    assert (change.path, change.action, change.cause) == (str(inbound), "update", "drift")
    assert change.before_sha256 == digest(b'{"tls": "off"}\n')
    assert change.after_sha256 == last[str(inbound)]


def test_removed_target_is_drift(layout: Layout) -> None:
    targets, last = _applied(STANDARD, layout)
    _path(layout, "data/cert.pem").unlink()
    change = _only(plan_for(targets, layout, last_applied=last))
    assert (change.kind, change.action, change.cause) == ("identity", "create", "drift")


def test_target_created_by_someone_else_is_drift(layout: Layout) -> None:
    parts = replace(STANDARD, https=False)
    targets, last = _applied(parts, layout)
    ssl_conf = _path(layout, "nginx/ssl.conf")
    assert last[str(ssl_conf)] is None
    ssl_conf.parent.mkdir(parents=True, exist_ok=True)
    ssl_conf.write_text("ssl_protocols TLSv1;\n")
    change = _only(plan_for(targets, layout, last_applied=last))
    assert (change.path, change.action, change.cause) == (str(ssl_conf), "delete", "drift")


def test_changed_desired_state_is_desired(layout: Layout) -> None:
    _, last = _applied(STANDARD, layout)
    new = render(desired_from(state_input(replace(STANDARD, identity=1))), layout)
    result = plan_for(new, layout, last_applied=last)
    assert {(Path(c.path).name, c.action, c.cause) for c in result.changes} == {
        ("cert.pem", "update", "desired"),
        ("key.pem", "update", "desired"),
        ("tls.pem", "update", "desired"),
    }
    assert result.kinds == ("identity",)


def test_desired_change_and_drift_in_one_plan(layout: Layout) -> None:
    _, last = _applied(STANDARD, layout)
    _path(layout, "data/server-profiles.json").write_text("{}\n")
    new = render(desired_from(state_input(replace(STANDARD, https=False))), layout)
    result = plan_for(new, layout, last_applied=last)
    causes = {Path(c.path).name: (c.action, c.cause) for c in result.changes}
    assert causes == {
        "ssl.conf": ("delete", "desired"),
        "server-profiles.json": ("update", "drift"),
    }
    assert result.kinds == ("console", "profiles")


def test_without_last_applied_everything_is_desired(layout: Layout) -> None:
    targets = render(desired_from(state_input(STANDARD)), layout)
    result = plan_for(targets, layout)
    assert result.changes
    assert {c.cause for c in result.changes} == {"desired"}
    assert {c.action for c in result.changes} == {"create"}


def test_mode_only_change_is_an_update_with_the_same_sha(layout: Layout) -> None:
    targets, last = _applied(STANDARD, layout)
    key = _path(layout, "data/key.pem")
    os.chmod(key, 0o644)
    change = _only(plan_for(targets, layout, last_applied=last))
    assert (change.path, change.action, change.cause) == (str(key), "update", "drift")
    assert change.before_sha256 == change.after_sha256
    assert change.mode == 0o600


def test_key_mode_setting_change_updates_key_files(layout: Layout) -> None:
    _, last = _applied(STANDARD, layout)
    group_readable = replace(layout, key_mode=0o640)
    targets = render(desired_from(state_input(STANDARD)), group_readable)
    result = plan_for(targets, group_readable, last_applied=last)
    assert {(Path(c.path).name, c.action, c.mode) for c in result.changes} == {
        ("key.pem", "update", 0o640),
        ("tls.pem", "update", 0o640),
    }
    assert all(c.before_sha256 == c.after_sha256 for c in result.changes)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root")
def test_gid_mismatch_is_an_update(layout: Layout) -> None:
    grouped = replace(layout, gid=65534)
    targets, last = _applied(STANDARD, grouped)
    cert = _path(layout, "data/cert.pem")
    assert cert.stat().st_gid == 65534
    os.chown(cert, -1, 0)
    change = _only(plan_for(targets, grouped, last_applied=last))
    assert (change.path, change.action, change.before_sha256) == (
        str(cert),
        "update",
        change.after_sha256,
    )


def test_gid_unset_ignores_the_group(layout: Layout) -> None:
    targets, _ = _applied(STANDARD, layout)
    os.chown(_path(layout, "data/cert.pem"), -1, 65534 if os.geteuid() == 0 else os.getegid())
    assert plan_for(targets, layout).empty


def test_symlink_in_place_of_a_target_is_replaced(layout: Layout, tmp_path: Path) -> None:
    targets, _ = _applied(STANDARD, layout)
    cert = _path(layout, "data/cert.pem")
    (tmp_path / "elsewhere.pem").write_bytes(cert.read_bytes())
    cert.unlink()
    cert.symlink_to(tmp_path / "elsewhere.pem")
    change = _only(plan_for(targets, layout))
    assert (change.path, change.action) == (str(cert), "update")
    assert change.before_sha256 != change.after_sha256


def test_unwanted_prefixed_trust_file_is_deleted(layout: Layout) -> None:
    _, last = _applied(STANDARD, layout)
    trust = Path(layout.trust_dir)
    fewer = render(desired_from(state_input(replace(STANDARD, trust={"root": 0}))), layout)
    change = _only(plan_for(fewer, layout, last_applied=last))
    assert (change.path, change.kind, change.action, change.cause) == (
        str(trust / f"{PREFIX}partner.crt"),
        "trust",
        "delete",
        "desired",
    )
    assert change.before_sha256 == last[change.path]


def test_stray_prefixed_trust_file_after_a_converged_pass_is_drift(layout: Layout) -> None:
    targets, last = _applied(STANDARD, layout)
    stray = Path(layout.trust_dir) / f"{PREFIX}planted.crt"
    stray.write_bytes(pool().cas[3])
    change = _only(plan_for(targets, layout, last_applied=last))
    assert (change.path, change.action, change.cause) == (str(stray), "delete", "drift")


def test_files_without_the_prefix_are_never_planned(layout: Layout) -> None:
    trust = Path(layout.trust_dir)
    for name in ("ca.crt", "reconciler.crt", "Reconciler-x.crt", f"x{PREFIX}y.crt", "partner.pem"):
        (trust / name).write_bytes(b"someone else's")
    (trust / f"{PREFIX}notes.txt").write_bytes(b"not a .crt")
    targets = render(desired_from(state_input(STANDARD)), layout)
    result = plan_for(targets, layout)
    planned = {Path(c.path).name for c in result.changes if c.kind == "trust"}
    assert planned == {f"{PREFIX}partner.crt", f"{PREFIX}root.crt"}
    apply(result)
    nothing = render(desired_from(state_input(replace(STANDARD, trust={}))), layout)
    deletes = {Path(c.path).name for c in plan_for(nothing, layout).changes}
    assert deletes == {f"{PREFIX}partner.crt", f"{PREFIX}root.crt"}


def test_plan_is_pure_and_sorted() -> None:
    targets = (
        Target("/r/b", "profiles", 0o644, b"b"),
        Target("/r/a", "console", 0o644, None),
        Target("/r/c", "identity", 0o600, b"c", secret=True),
    )
    observed = {
        "/r/a": Observed("console", digest(b"x"), 0o644, 0),
        "/r/c": Observed("identity", digest(b"c"), 0o600, 0),
        "/t/reconciler-z.crt": Observed("trust", digest(b"z"), 0o644, 0),
    }
    first = plan("r1", targets, observed)
    assert first == plan("r1", targets, dict(reversed(observed.items())))
    assert [(c.path, c.action) for c in first.changes] == [
        ("/r/a", "delete"),
        ("/r/b", "create"),
        ("/t/reconciler-z.crt", "delete"),
    ]
    assert first.kinds == ("console", "trust", "profiles")
    assert first.revision == "r1"


# -- a commit that changes nothing relevant changes no target byte --------------------------------


def _crlf(pem: bytes) -> bytes:
    return pem.replace(b"\n", b"\r\n")


def test_irrelevant_commit_renders_identical_targets(layout: Layout) -> None:
    chain, key = pool().identities[0]
    plain = StateInput(
        revision="sha256:" + "a" * 64,
        gateway=SourceFile(
            "gateway.toml",
            b'[identity]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'
            b'[console]\nhttps = true\n[smtp_inbound]\ntls = "optional"\n',
        ),
        cert=SourceFile("tls/cert.pem", chain),
        key=KeySource("tls/key.pem", SecretBytes(key)),
        trust=(("partner", SourceFile("trust/partner.pem", pool().cas[2])),),
        profiles=(
            ("core", SourceFile("profiles/core.toml", b'url = "https://core.example.com/api"\n')),
            (
                "mx",
                SourceFile(
                    "profiles/mx.toml",
                    b'url = "smtp://mx.example.com"\ntransport_encryption = "starttls-required"\n',
                ),
            ),
        ),
    )
    noisy = StateInput(
        revision="0123456789abcdef0123456789abcdef01234567",
        gateway=SourceFile(
            "gateway.toml",
            b"# Gateway TLS, reviewed by the security team\r\n"
            b'[smtp_inbound]\r\ntls = "optional"   # STARTTLS offered\r\n\r\n'
            b'[console]\r\ntls_policy = "intermediate"\r\nhttps = true\r\n'
            b"[policy]\r\nmin_days_valid = 7\r\nallow_self_signed = false\r\n"
            b'[identity]\r\nkey  = "tls/key.pem"\r\ncert = "tls/cert.pem"\r\n',
        ),
        cert=SourceFile("tls/cert.pem", _crlf(chain)),
        key=KeySource("tls/key.pem", SecretBytes(_crlf(key))),
        trust=(("partner", SourceFile("trust/partner.crt", _crlf(pool().cas[2]) + b"\r\n")),),
        profiles=(
            (
                "mx",
                SourceFile(
                    "profiles/mx.toml",
                    b'# the relay\ntransport_encryption = "starttls-required"\n'
                    b'url = "smtp://mx.example.com:25"\n',
                ),
            ),
            (
                "core",
                SourceFile("profiles/core.toml", b'url = "https://core.example.com:8008/api"  \n'),
            ),
        ),
    )
    first = render(desired_from(plain), layout)
    second = render(desired_from(noisy), layout)
    assert [(t.path, t.mode, t.content) for t in first] == [
        (t.path, t.mode, t.content) for t in second
    ]
    apply(plan_for(first, layout))
    assert plan_for(second, layout).empty
