"""Server profiles as the gateway defines them: servers, type, mode, defaults, secrets, probe."""

from __future__ import annotations

import json
import os
import secrets
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from reconciler.cli.probereport import exit_code, format_results, profile_verdicts
from reconciler.core.desired import Finding, PolicySection, Profile, ProfileFile
from reconciler.core.evaluate import KeySource, SourceFile, StateInput, evaluate
from reconciler.core.profile import MAX_CREDENTIAL_BYTES, check_profile
from reconciler.core.render import Layout, Target, render
from reconciler.core.schema import parse_toml
from reconciler.core.secret import SecretBytes
from reconciler.probe.prober import probe_profiles
from reconciler.source.state import read_snapshot
from tests.helpers import REPO
from tests.helpers.gitops import ConfigMapVolume
from tests.helpers.state import Pki
from tests.helpers.tls import TlsServer, closed_port, server_context

FILE = "profiles/relay.toml"
POLICY = PolicySection()
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def parsed(text: str) -> ProfileFile:
    model, findings = parse_toml(textwrap.dedent(text).encode(), FILE, ProfileFile)
    assert findings == [], findings
    assert model is not None
    return model


def check(text: str, policy: PolicySection = POLICY) -> tuple[Profile | None, list[Finding]]:
    return check_profile("relay", parsed(text), file=FILE, policy=policy)


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def warnings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "warning"]


def servers_of(profile: Profile | None) -> list[tuple[str, str, int, str, str]]:
    assert profile is not None
    return [(s.scheme, s.host, s.port, s.path, s.tls) for s in profile.servers]


# --------------------------------------------------------------------------- the full form


def test_two_smtp_servers_in_failover_order() -> None:
    profile, findings = check(
        """
        type = "smtp"
        servers = ["smtps://relay1.example.com", "smtp://relay2.example.com:587"]
        transport_encryption = "starttls-required"
        """
    )
    assert errors(findings) == []
    assert profile is not None
    assert (profile.kind, profile.mode) == ("smtp", "failover")
    assert servers_of(profile) == [
        ("smtps", "relay1.example.com", 465, "", "implicit"),
        ("smtp", "relay2.example.com", 587, "", "starttls-required"),
    ]
    # the first server's fields stay at the top level
    assert (profile.scheme, profile.host, profile.port, profile.tls) == (
        "smtps",
        "relay1.example.com",
        465,
        "implicit",
    )
    # the STARTTLS warning names the server it is about
    [warning] = warnings(findings)
    assert warning.field == "servers[1]"
    assert "smtp://relay2.example.com:587" in warning.reason


def test_type_is_implied_by_the_schemes_and_round_robin_is_kept() -> None:
    profile, findings = check(
        """
        servers = ["https://core1.example.com:8008", "https://core2.example.com:8008/"]
        mode = "round-robin"
        """
    )
    assert findings == []
    assert profile is not None
    assert (profile.kind, profile.mode) == ("core", "round-robin")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('url = "smtp://mx.example.com"\ntransport_encryption = "starttls-required"',
                     ("smtp", "mx.example.com", 25, "", "starttls-required"), id="smtp-25"),
        pytest.param('url = "smtps://mx.example.com"',
                     ("smtps", "mx.example.com", 465, "", "implicit"), id="smtps-465"),
        pytest.param('url = "https://core.example.com"',
                     ("https", "core.example.com", 8008, "", "implicit"), id="core-https-8008"),
        pytest.param('url = "http://core.example.com"',
                     ("http", "core.example.com", 8008, "", "none"), id="core-http-8008"),
        pytest.param('type = "vault"\nurl = "https://vault.example.com"',
                     ("https", "vault.example.com", 8010, "/vault_rest", "implicit"),
                     id="vault-8010-path"),
        pytest.param('type = "vault"\nurl = "https://vault.example.com:9000/api"',
                     ("https", "vault.example.com", 9000, "/api", "implicit"),
                     id="vault-explicit"),
    ],
)  # fmt: skip
def test_default_ports_and_paths_by_type(text: str, expected: tuple[object, ...]) -> None:
    profile, findings = check(text)
    assert errors(findings) == []
    assert servers_of(profile) == [expected]


def test_a_core_profile_without_a_port_is_warned_naming_the_port_now_used() -> None:
    profile, findings = check('servers = ["https://core.example.com/api", "https://b.example:443"]')
    assert profile is not None
    [warning] = warnings(findings)
    assert (warning.file, warning.field) == (FILE, "servers[0]")
    assert "8008" in warning.reason
    assert "443" in warning.reason
    assert "https://core.example.com:8008/api" in warning.reason
    # a Vault profile has always had its own default: nothing to warn about
    _, vault = check('type = "vault"\nurl = "https://vault.example.com"')
    assert vault == []


def test_the_one_server_shorthand_is_the_same_profile_as_one_server_in_servers() -> None:
    short, _ = check('url = "smtps://relay.example.com"')
    full, _ = check('servers = ["smtps://relay.example.com"]')
    assert short == full


def test_every_existing_example_profile_keeps_validating() -> None:
    examples = sorted((REPO / "desired-state" / "profiles").glob("*.toml"))
    assert len(examples) >= 4, f"the example profiles are gone: {examples}"  # one per type at least
    for path in examples:
        model, findings = parse_toml(path.read_bytes(), path.name, ProfileFile)
        assert findings == [], (path, findings)
        assert model is not None
        profile, findings = check_profile(path.stem, model, file=path.name, policy=POLICY)
        assert errors(findings) == [], (path, findings)
        assert profile is not None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        pytest.param('url = "smtps://a.example"\nservers = ["smtps://b.example"]', "servers",
                     "not both", id="url-and-servers"),
        pytest.param('type = "smtp"', "url", "required", id="no-server"),
        pytest.param('servers = ["smtps://relay.example", "smtps://RELAY.example:465"]',
                     "servers[1]", "the same server as servers[0]", id="duplicate"),
        pytest.param('servers = ["smtps://relay.example", "https://core.example:8008"]',
                     "servers", "one type", id="mixed-types"),
        pytest.param('type = "vault"\nurl = "smtps://relay.example"', "url",
                     "not a vault server", id="vault-smtps"),
        pytest.param('type = "core"\nservers = ["https://a.example:8008", "smtp://b.example"]\n'
                     'transport_encryption = "starttls-required"', "servers[1]",
                     "not a core server", id="core-smtp"),
        pytest.param('url = "smtps://relay.example"\nmode = "failover"', "mode",
                     "two or more servers", id="mode-one-server"),
        pytest.param('servers = ["smtps://999.999.999.999"]', "servers[0]",
                     "not a valid IPv4 address", id="ipv4-octets"),
        pytest.param('url = "smtps://10.0.0.256"', "url", "not a valid IPv4 address",
                     id="ipv4-256"),
        pytest.param('url = "https://[fe80::1%25eth0]/"', "url", "zone", id="ipv6-zone"),
        pytest.param('servers = ["smtps://a.example", "smtps://user:hunter2@b.example"]',
                     "servers[1]", "user info", id="user-info"),
        pytest.param('servers = ["https://a.example:8008/?q=1"]', "servers[0]", "query",
                     id="query"),
        pytest.param('servers = ["https://a.example:8008/#x"]', "servers[0]", "fragment",
                     id="fragment"),
        pytest.param('servers = ["smtps://a.example/inbox"]', "servers[0]", "path",
                     id="smtp-path"),
        pytest.param('servers = ["smtps://a.example", "smtp://b.example"]', "transport_encryption",
                     "required for smtp://", id="te-missing"),
        pytest.param('servers = ["smtps://a.example", "smtps://b.example"]\n'
                     'transport_encryption = "starttls-required"', "transport_encryption",
                     "only allowed with smtp://", id="te-without-smtp"),
        pytest.param('url = "https://core.example:8008"\npassword_file = "/run/s/p"',
                     "password_file", "only allowed on smtp profiles", id="password-on-core"),
        pytest.param('url = "smtps://relay.example"\napi_key_file = "/run/s/k"', "api_key_file",
                     "only allowed on vault profiles", id="api-key-on-smtp"),
        pytest.param('url = "smtps://relay.example"\npassword_file = "secrets/p"',
                     "password_file", "absolute path inside one of key_dirs", id="relative"),
    ],
)  # fmt: skip
def test_bad_profiles_are_errors_naming_the_field(text: str, field: str, reason: str) -> None:
    profile, findings = check(text)
    assert profile is None
    found = [(f.field, f.reason) for f in errors(findings)]
    assert any(f == field and reason in r for f, r in found), found
    assert all(f.file == FILE for f in findings)
    assert "hunter2" not in " ".join(map(str, findings))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("servers = []", "at least one"),
        ('servers = "smtps://a.example"', "array of strings"),
        ('servers = ["smtps://a.example", 7]', "must be a string"),
        ('mode = "random"\nservers = ["smtps://a", "smtps://b"]', "'failover' or 'round-robin'"),
        ('type = "ldap"\nurl = "smtps://a"', "'smtp', 'core' or 'vault'"),
    ],
)
def test_bad_types_and_values_are_toml_errors(text: str, reason: str) -> None:
    model, findings = parse_toml(text.encode(), FILE, ProfileFile)
    assert model is None
    assert any(reason in f.reason for f in findings), findings


def test_require_tls_outbound_applies_to_every_server_and_names_it() -> None:
    policy = PolicySection(require_tls_outbound=True)
    profile, findings = check(
        'servers = ["https://a.example:8008", "http://b.example:8008"]', policy
    )
    assert profile is None
    [error] = errors(findings)
    assert error.field == "servers[1]"
    assert "require_tls_outbound" in error.reason
    assert "http://b.example:8008" in error.reason
    profile, findings = check(
        """
        servers = ["smtps://a.example", "smtp://b.example"]
        transport_encryption = "starttls-optional"
        """,
        policy,
    )
    assert profile is None
    [error] = errors(findings)
    assert error.field == "transport_encryption"
    assert "smtp://b.example:25" in error.reason


# --------------------------------------------------------------------------- credentials, pure

RELAY = (
    'servers = ["smtps://relay1.example.com", "smtps://relay2.example.com"]\n'
    'password_file = "/run/secrets/relay/password"\n'
)


def _input(profile: str, credentials: dict[str, bytes | None]) -> StateInput:
    return StateInput(
        revision="sha256:" + "0" * 64,
        gateway=SourceFile("gateway.toml", b""),
        profiles=(("relay", SourceFile(FILE, profile.encode())),),
        credentials=tuple(
            (path, KeySource(path, SecretBytes(data) if data is not None else None))
            for path, data in credentials.items()
        ),
    )


def test_a_credential_is_carried_opaquely_and_listed_as_a_secret_file() -> None:
    value = b"pw-" + secrets.token_hex(8).encode() + b"\n"
    evaluation = evaluate(_input(RELAY, {"/run/secrets/relay/password": value}), NOW)
    assert evaluation.desired is not None, evaluation.findings
    [profile] = evaluation.desired.profiles
    [credential] = profile.credentials
    assert credential.value.reveal() == value
    assert profile.secret_files == (("password_file", "/run/secrets/relay/password"),)
    assert parsed(RELAY).secret_files == profile.secret_files
    assert value.decode().strip() not in repr(profile)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b" \n", "empty"),
        (b"x" * (MAX_CREDENTIAL_BYTES + 1), "over the 4096-byte limit"),
        (None, None),  # unreadable: the snapshot says why; the state is rejected even if it did not
    ],
)
def test_a_bad_credential_rejects_the_state_naming_the_field(
    data: bytes | None, reason: str | None
) -> None:
    evaluation = evaluate(_input(RELAY, {"/run/secrets/relay/password": data}), NOW)
    assert evaluation.desired is None
    [error] = [f for f in evaluation.errors if f.file == FILE]
    assert error.field == "password_file"
    assert (reason or "could not be read") in error.reason


def test_a_credential_that_was_not_read_at_all_is_an_error() -> None:
    evaluation = evaluate(_input(RELAY, {}), NOW)
    assert evaluation.desired is None
    [error] = [f for f in evaluation.errors if f.file == FILE]
    assert (error.field, error.reason) == (
        "password_file",
        "/run/secrets/relay/password: was not read",
    )


# --------------------------------------------------------------------------- snapshot


def _state_with(tmp_path: Path, profile: str) -> Path:
    state = tmp_path / "state"
    (state / "profiles").mkdir(parents=True)
    (state / "gateway.toml").write_text("")
    (state / "profiles" / "relay.toml").write_text(profile)
    return state


def test_the_snapshot_reads_credentials_only_inside_key_dirs(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    value = secrets.token_hex(12).encode()
    (keys / "password").write_bytes(value)
    (tmp_path / "elsewhere").write_bytes(value)
    inside = _state_with(tmp_path, RELAY.replace("/run/secrets/relay/password", f"{keys}/password"))
    inp = read_snapshot(inside, [keys])
    assert inp.findings == ()
    assert dict(inp.credentials)[f"{keys}/password"].data == SecretBytes(value)
    evaluation = evaluate(inp, NOW)
    assert evaluation.desired is not None

    outside = RELAY.replace("/run/secrets/relay/password", f"{tmp_path}/elsewhere")
    (inside / "profiles" / "relay.toml").write_text(outside)
    for key_dirs in ([keys], []):
        inp = read_snapshot(inside, key_dirs)
        [finding] = inp.findings
        assert (finding.file, finding.field) == (FILE, "password_file")
        assert "inside one of key_dirs" in finding.reason
        assert evaluate(inp, NOW).desired is None
        assert value.decode() not in str(finding)


@pytest.mark.parametrize("kind", ["missing", "directory", "too-big"])
def test_a_missing_or_unreadable_credential_names_the_profile_and_field(
    tmp_path: Path, kind: str
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    if kind == "directory":
        (keys / "password").mkdir()
    elif kind == "too-big":
        (keys / "password").write_bytes(b"x" * (2 * 1024 * 1024))
    state = _state_with(tmp_path, RELAY.replace("/run/secrets/relay/password", f"{keys}/password"))
    evaluation = evaluate(read_snapshot(state, [keys]), NOW)
    assert evaluation.desired is None
    [error] = evaluation.errors
    assert (error.file, error.field) == (FILE, "password_file")
    assert str(keys / "password") in error.reason


# --------------------------------------------------------------------------- rendering

LAYOUT = Layout(root=PurePosixPath("/opt/gateway"), trust_dir=PurePosixPath("/trust"))


def _desired(profile_texts: dict[str, str], credentials: dict[str, bytes]) -> list[Target]:
    inp = StateInput(
        revision="sha256:" + "0" * 64,
        gateway=SourceFile("gateway.toml", b""),
        profiles=tuple(
            (name, SourceFile(f"profiles/{name}.toml", textwrap.dedent(text).encode()))
            for name, text in sorted(profile_texts.items())
        ),
        credentials=tuple(
            (path, KeySource(path, SecretBytes(data))) for path, data in credentials.items()
        ),
    )
    evaluation = evaluate(inp, NOW)
    assert evaluation.desired is not None, evaluation.findings
    return list(render(evaluation.desired, LAYOUT))


def test_rendering_of_every_type_and_mode() -> None:
    password, api_key = b"relay-password\n", b"vault-api-key"
    targets = _desired(
        {
            "relay": """
                servers = ["smtps://relay1.example.com", "smtp://relay2.example.com:587"]
                transport_encryption = "starttls-required"
                password_file = "/run/secrets/relay/password"
                """,
            "core": """
                servers = ["https://core1.example.com:8008/api", "http://core2.example.com:8008"]
                mode = "round-robin"
                """,
            "vault": """
                type = "vault"
                url = "https://vault.example.com"
                api_key_file = "/run/secrets/vault/apikey"
                """,
        },
        {"/run/secrets/relay/password": password, "/run/secrets/vault/apikey": api_key},
    )
    by_path = {t.path: t for t in targets}
    profiles_json = by_path["/opt/gateway/data/server-profiles.json"].content
    assert profiles_json is not None
    document = json.loads(profiles_json)
    core, relay, vault = document["profiles"]
    assert core == {
        "name": "core", "kind": "core", "type": "core", "mode": "round-robin",
        "scheme": "https", "host": "core1.example.com", "port": 8008, "path": "/api",
        "tls": "implicit",
        "servers": [
            {"scheme": "https", "host": "core1.example.com", "port": 8008, "path": "/api",
             "tls": "implicit"},
            {"scheme": "http", "host": "core2.example.com", "port": 8008, "path": "",
             "tls": "none"},
        ],
    }  # fmt: skip
    assert relay["mode"] == "failover"
    assert [s["tls"] for s in relay["servers"]] == ["implicit", "starttls-required"]
    assert relay["password_file"] == "/opt/gateway/data/secrets/relay.password"
    assert "api_key_file" not in relay
    assert vault["type"] == vault["kind"] == "vault"
    assert vault["servers"] == [
        {"scheme": "https", "host": "vault.example.com", "port": 8010, "path": "/vault_rest",
         "tls": "implicit"}
    ]  # fmt: skip
    assert vault["api_key_file"] == "/opt/gateway/data/secrets/vault.api_key"
    # the credentials: secret targets of kind profiles, mode like key.pem, content as read
    for path, value in (
        ("/opt/gateway/data/secrets/relay.password", password),
        ("/opt/gateway/data/secrets/vault.api_key", api_key),
    ):
        target = by_path[path]
        assert (target.kind, target.mode, target.secret, target.content) == (
            "profiles", 0o600, True, value
        )  # fmt: skip
    # no credential value in the profiles file
    text = profiles_json.decode()
    assert "relay-password" not in text
    assert "vault-api-key" not in text


# --------------------------------------------------------------------------- probe


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[TlsServer]:
    with TlsServer(server_context(pki.chain(), pki.leaf.key_pem)) as server:
        yield server


def _two_servers(first: int, second: int, mode: str = "failover") -> Profile:
    text = f'servers = ["https://127.0.0.1:{first}", "https://127.0.0.1:{second}"]\n'
    if mode != "failover":
        text += f'mode = "{mode}"\n'
    profile, findings = check_profile("core", parsed(text), file=FILE, policy=POLICY)
    assert profile is not None, findings
    return profile


def test_probe_checks_every_server_and_a_failing_preferred_one_is_degraded(
    tls_server: TlsServer, pki: Pki
) -> None:
    down = closed_port()
    degraded = _two_servers(down, tls_server.port)
    results = probe_profiles([degraded], pki.root.cert_pem, timeout_s=3)
    assert [(r.server, r.status) for r in results] == [(0, "unreachable"), (1, "trusted")]
    assert profile_verdicts(results) == {"core": "degraded"}
    assert exit_code(results) == 1
    text = format_results(results)
    assert f"degraded: core: preferred server 1 (127.0.0.1:{down}) failed" in text
    assert "1 degraded profile(s)" in text.splitlines()[-1]

    with TlsServer(server_context(pki.chain(), pki.leaf.key_pem)) as other:
        both = probe_profiles(
            [_two_servers(tls_server.port, other.port, "round-robin")],
            pki.root.cert_pem,
            timeout_s=3,
        )
    assert [r.status for r in both] == ["trusted", "trusted"]
    assert profile_verdicts(both) == {"core": "ok"}
    assert exit_code(both) == 0

    # the preferred one passing does not hide a broken fallback either
    late = probe_profiles([_two_servers(tls_server.port, down)], pki.root.cert_pem, timeout_s=3)
    assert profile_verdicts(late) == {"core": "degraded"}

    none = probe_profiles([_two_servers(down, closed_port(), "round-robin")], b"", timeout_s=3)
    assert profile_verdicts(none) == {"core": "failed"}
    assert exit_code(none) == 1


def test_a_secret_volume_swapped_while_its_credential_is_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.source import files as statefiles
    from tests.helpers.gitops import ConfigMapVolume

    volume = ConfigMapVolume(tmp_path)
    volume.push({"password": b"first"})
    state = _state_with(
        tmp_path, RELAY.replace("/run/secrets/relay/password", f"{volume.state_dir}/password")
    )
    real_load = statefiles.FileReader.load
    swapped: list[bool] = []

    def load_during_a_swap(
        self: object, real: str, shown: str, field: str | None, **options: bool
    ) -> object:
        if field == "password_file" and not swapped:
            swapped.append(True)
            volume.push({"password": b"second"})  # the old ..TIMESTAMP directory is gone now
        return real_load(self, real, shown, field, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(statefiles.FileReader, "load", load_during_a_swap)
    inp = read_snapshot(state, [volume.state_dir])
    assert swapped
    assert inp.findings == ()
    [(_, source)] = inp.credentials
    assert source.data == SecretBytes(b"second")


def _kubelet_paths(volume: Path) -> dict[str, str]:
    stamped = os.readlink(volume / "..data")
    return {
        "timestamped": f"{volume}/{stamped}/password",
        "up-from-data": f"{volume}/..data/../{stamped}/password",
    }


@pytest.mark.parametrize("how", ["timestamped", "up-from-data"])
@pytest.mark.parametrize("no_secrets", [False, True], ids=["read", "no-secrets"])
def test_a_credential_path_into_a_kubelet_timestamped_directory_is_refused(
    tmp_path: Path, how: str, no_secrets: bool
) -> None:
    """As for the identity: the kubelet deletes a `..TIMESTAMP` directory at the next update of
    the Secret, so a path into one would break then. The visible name (through `..data`) is
    the one to use; the file is not read."""
    volume = ConfigMapVolume(tmp_path)
    volume.push({"password": b"kubelet-secret-password\n"})
    path = _kubelet_paths(volume.root)[how]
    state = _state_with(tmp_path, RELAY.replace("/run/secrets/relay/password", path))
    inp = read_snapshot(state, [volume.root], no_secrets=no_secrets)
    assert inp.credentials == ()
    evaluation = evaluate(inp, NOW)
    assert evaluation.desired is None
    [error] = evaluation.errors
    assert (error.file, error.field, error.rule) == (FILE, "password_file", "credential-ref")
    assert "kubelet directory" in error.reason


@pytest.mark.parametrize("field", ["password_file", "api_key_file"])
def test_a_kubelet_timestamped_credential_path_is_a_profile_error(field: str) -> None:
    kind = 'type = "vault"\nurl = "https://vault.example:8010"' if "api" in field else RELAY
    text = f'{kind}\n{field} = "/run/secrets/x/..2026_11_27_17_13_14.123456789/value"\n'
    if field == "password_file":
        text = text.replace('password_file = "/run/secrets/relay/password"\n', "")
    profile, findings = check(text)
    assert profile is None
    assert [(f.field, f.rule) for f in errors(findings)] == [(field, "credential-ref")]


def test_a_credential_path_through_the_data_link_is_read(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path)
    volume.push({"password": b"kubelet-secret-password\n"})
    path = f"{volume.root}/..data/password"
    state = _state_with(tmp_path, RELAY.replace("/run/secrets/relay/password", path))
    evaluation = evaluate(read_snapshot(state, [volume.root]), NOW)
    assert evaluation.desired is not None, evaluation.errors
