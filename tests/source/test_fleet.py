"""Fleet repositories: composition, precedence, escapes, whole-repository validation, a pass."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.compose import merge_gateway, parse_fleet, render_tables
from reconciler.core.evaluate import Evaluation, SourceFile, StateInput, evaluate
from reconciler.source.fleet import fleet_root, gateways_of, shared_layers
from reconciler.source.state import read_snapshot
from tests.helpers import REPO
from tests.helpers.sandbox import Sandbox
from tests.helpers.state import Pki, StateDir

IDENTITY = """\
[identity]
cert = "tls/cert.pem"
key = "tls/key.pem"
"""

SHARED_GATEWAY = """\
[console]
https = true
tls_policy = "modern"

[smtp_inbound]
tls = "required"

[policy]
min_days_valid = 14
require_tls_outbound = true
"""


def make_fleet(base: Path, pki: Pki, gateways: tuple[str, ...] = ("gw-a", "gw-b")) -> Path:
    """A fleet repository: one shared layer (trust, two profiles, defaults) and a few gateways."""
    repo = base / "repo"
    (repo).mkdir(parents=True)
    (repo / "fleet.toml").write_text('shared = ["common"]\n')
    shared = StateDir(repo / "common")
    shared.gateway(SHARED_GATEWAY)
    shared.trust("fleet-ca", pki.other_ca.cert_pem)
    shared.profile("relay", 'url = "smtps://relay.example.com"\n')
    shared.profile("core", 'url = "https://core.example.com/api"\n')
    for name in gateways:
        own = StateDir(repo / "gateways" / name)
        own.gateway(IDENTITY)
        own.identity(pki, pki.leaf if name.endswith("a") else pki.leaf2)
    return repo


def composed(state: Path, key_dirs: tuple[Path, ...] = ()) -> tuple[StateInput, Evaluation]:
    inp = read_snapshot(state, key_dirs)
    return inp, evaluate(inp, datetime.now(UTC))


def errors_of(evaluation: Evaluation) -> str:
    return "\n".join(str(f) for f in evaluation.errors)


def test_a_gateway_gets_the_shared_trust_profiles_and_defaults(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    inp, evaluation = composed(repo / "gateways" / "gw-a")
    desired = evaluation.desired
    assert desired is not None, evaluation.findings
    assert [t.name for t in desired.trust] == ["fleet-ca"]
    assert [p.name for p in desired.profiles] == ["core", "relay"]
    assert desired.gateway.console.tls_policy == "modern"
    assert desired.gateway.smtp_inbound.tls == "required"
    assert desired.gateway.policy.min_days_valid == 14
    assert desired.identity is not None
    # Messages name shared files relative to the gateway's STATE.
    assert dict(inp.trust)["fleet-ca"].path == "../../common/trust/fleet-ca.pem"


def test_the_gateway_overrides_shared_entries_and_keys(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    own = StateDir(repo / "gateways" / "gw-b")
    own.gateway(IDENTITY + '\n[console]\ntls_policy = "old"\n\n[policy]\nmin_days_valid = 3\n')
    own.profile("relay", 'url = "smtps://relay.eu.example.com"\n')
    own.trust("own-ca", pki.root.cert_pem)
    _, evaluation = composed(repo / "gateways" / "gw-b")
    desired = evaluation.desired
    assert desired is not None, evaluation.findings
    profiles = {p.name: p for p in desired.profiles}
    assert "relay.eu.example.com" in str(profiles["relay"])
    assert [t.name for t in desired.trust] == ["fleet-ca", "own-ca"]
    console = desired.gateway.console
    # key by key: the gateway's tls_policy wins, the shared https = true stays
    assert (console.tls_policy, console.https) == ("old", True)
    assert desired.gateway.policy.min_days_valid == 3
    assert desired.gateway.policy.require_tls_outbound is True
    # the other gateway is untouched by gw-b's overrides
    _, other = composed(repo / "gateways" / "gw-a")
    assert other.desired is not None
    assert other.desired.gateway.console.tls_policy == "modern"


def test_later_layers_win_over_earlier_ones(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    (repo / "fleet.toml").write_text('shared = ["common", "region/eu"]\n')
    eu = StateDir(repo / "region" / "eu")
    eu.gateway("[policy]\nmin_days_valid = 21\n")
    eu.profile("core", 'url = "https://core.eu.example.com/api"\n')
    _, evaluation = composed(repo / "gateways" / "gw-a")
    desired = evaluation.desired
    assert desired is not None, evaluation.findings
    assert desired.gateway.policy.min_days_valid == 21
    assert desired.gateway.policy.require_tls_outbound is True  # from the first layer
    assert "core.eu.example.com" in str({p.name: p for p in desired.profiles}["core"])
    assert [str(p) for p in shared_layers(repo)] == [str(repo / "common"), str(repo / "region/eu")]


def test_the_revision_is_the_repository_commit(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "fleet"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    inp_a, _ = composed(repo / "gateways" / "gw-a")
    inp_b, _ = composed(repo / "gateways" / "gw-b")
    assert inp_a.revision == inp_b.revision == head


def test_content_digest_changes_with_a_shared_file(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    before, _ = composed(repo / "gateways" / "gw-a")
    (repo / "common" / "profiles" / "core.toml").write_text('url = "https://c2.example.com"\n')
    after, _ = composed(repo / "gateways" / "gw-a")
    assert before.content_digest != after.content_digest
    assert after.revision.startswith("sha256:")


@pytest.mark.parametrize(
    ("shared", "reason"),
    [
        ('shared = ["../outside"]', "no '.', '..' or empty parts"),
        ('shared = ["/etc"]', "must be relative to the repository root"),
        ('shared = ["gateways/gw-b"]', "holds the gateways, not shared layers"),
        ('shared = [".git"]', "hidden directories"),
        ('shared = "common"', "must be a list of directory names"),
        ('shared = ["common"]\nextra = 1', "unknown key"),
        ('shared = ["missing"]', "missing: no such directory"),
    ],
)
def test_bad_fleet_files_reject_every_gateway_naming_the_field(
    tmp_path: Path, pki: Pki, shared: str, reason: str
) -> None:
    repo = make_fleet(tmp_path, pki)
    (tmp_path / "outside").mkdir()
    (repo / "fleet.toml").write_text(shared + "\n")
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    messages = [str(f) for f in evaluation.errors]
    assert any(m.startswith("error: ../../fleet.toml") and reason in m for m in messages), messages


def test_a_layer_linked_outside_the_repository_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    outside = StateDir(tmp_path / "elsewhere")
    outside.trust("evil", pki.root.cert_pem)
    os.symlink(outside.path, repo / "linked")
    (repo / "fleet.toml").write_text('shared = ["common", "linked"]\n')
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    assert "linked: leads outside the repository" in errors_of(evaluation)


def test_a_gateway_link_to_a_shared_file_is_an_escape_of_its_state(
    tmp_path: Path, pki: Pki
) -> None:
    # Composition is by fleet.toml, not by links: a gateway's files stay in its own directory.
    repo = make_fleet(tmp_path, pki)
    trust = repo / "gateways" / "gw-a" / "trust"
    trust.mkdir()
    os.symlink("../../../common/trust/fleet-ca.pem", trust / "copy.pem")
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    assert any(f.file == "trust/copy.pem" and "outside" in f.reason for f in evaluation.errors)


def test_a_shared_layer_file_linked_outside_it_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    (tmp_path / "secret.pem").write_bytes(pki.root.cert_pem)
    os.symlink(tmp_path / "secret.pem", repo / "common" / "trust" / "evil.pem")
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    files = {f.file for f in evaluation.errors}
    assert "../../common/trust/evil.pem" in files


def test_a_gateway_directory_linked_outside_is_an_escape(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    alien = StateDir(tmp_path / "alien")
    alien.gateway(IDENTITY)
    alien.identity(pki)
    os.symlink(alien.path, repo / "gateways" / "gw-x")
    _, evaluation = composed(repo / "gateways" / "gw-x")
    assert evaluation.desired is None
    assert "leads outside the fleet repository" in errors_of(evaluation)


def test_identity_in_a_shared_layer_is_an_error(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    StateDir(repo / "common").gateway(IDENTITY + SHARED_GATEWAY)
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    errors = evaluation.errors
    assert any(f.file == "../../common/gateway.toml" and f.field == "identity" for f in errors)


def test_a_typo_in_a_shared_gateway_toml_names_that_file(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    StateDir(repo / "common").gateway("[policy]\nmin_day_valid = 14\n")
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    assert [str(f) for f in evaluation.errors] == [
        "error: ../../common/gateway.toml: policy.min_day_valid: unknown key (typo?)"
    ]


def test_a_gateway_without_its_gateway_toml_is_rejected(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    (repo / "gateways" / "gw-a" / "gateway.toml").unlink()
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    assert "gateway.toml: required file is missing" in errors_of(evaluation)


def test_merge_renders_toml_that_reads_back_the_same() -> None:
    import tomllib

    tables: dict[str, dict[str, object]] = {
        "console": {"tls_policy": 'o"l\\d\n', "https": True},
        "policy": {"min_days_valid": 9},
    }
    assert tomllib.loads(render_tables(tables).decode()) == tables
    own = SourceFile("gateway.toml", b"[console]\nhttps = [1]\n")  # not plain: passed on as is
    merged, findings = merge_gateway([("x/gateway.toml", SourceFile("g", b"[policy]\n"))], own)
    assert merged == own
    assert findings == []


def test_parse_fleet_accepts_an_empty_list() -> None:
    parsed, findings = parse_fleet(b"shared = []\n")
    assert parsed is not None
    assert parsed.shared == ()
    assert findings == []


def test_a_plain_state_is_no_fleet_member(tmp_path: Path, pki: Pki) -> None:
    assert fleet_root(tmp_path / "state") is None
    repo = make_fleet(tmp_path, pki)
    assert fleet_root(repo / "gateways" / "gw-a") == repo
    assert gateways_of(repo / "gateways" / "gw-a") is None
    assert gateways_of(repo) == [repo / "gateways" / "gw-a", repo / "gateways" / "gw-b"]


def _validate(*dirs: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--state", *map(str, dirs)],
        check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip


def test_validate_of_the_repository_checks_every_gateway(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki, ("gw-a", "gw-b", "gw-c"))
    done = _validate(repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": valid, revision ") == 3
    for name in ("gw-a", "gw-b", "gw-c"):
        assert f"gateways/{name}: valid" in done.stdout
    # One broken gateway fails the whole run, and is named; the others still pass.
    StateDir(repo / "gateways" / "gw-b").profile("bad", 'url = "smtp://mx.example.org"\n')
    done = _validate(repo)
    assert done.returncode == 1
    assert "gateways/gw-b: invalid (1 error)" in done.stderr
    assert "profiles/bad.toml: transport_encryption" in done.stderr
    assert done.stdout.count(": valid, revision ") == 2
    # A shared mistake is every gateway's mistake.
    (repo / "common" / "profiles" / "core.toml").write_text('url = "ftp://x.example.org"\n')
    done = _validate(repo)
    assert done.returncode == 1
    assert done.stdout.count(": valid") == 0
    assert done.stderr.count("repo/common/profiles/core.toml") == 3


def test_validate_of_a_repository_without_gateways_fails(tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text("shared = []\n")
    done = _validate(tmp_path)
    assert done.returncode == 1
    assert "a fleet repository with no gateways/NAME directory" in done.stderr


def test_a_pass_applies_the_composed_state(sandbox: Sandbox, pki: Pki) -> None:
    repo = make_fleet(sandbox.base, pki)
    sandbox.state = StateDir(repo / "gateways" / "gw-a")
    done = sandbox.run("apply")
    assert done.returncode == 0, done.stderr
    assert sandbox.trust_dir.joinpath("reconciler-fleet-ca.crt").read_bytes().strip() == (
        pki.other_ca.cert_pem.strip()
    )
    assert "ssl_protocols TLSv1.3;" in (sandbox.root / "nginx" / "ssl.conf").read_text()
    # A change in the shared layer reaches the gateway at its next pass.
    (repo / "common" / "trust" / "fleet-ca.pem").unlink()
    done = sandbox.run("apply")
    assert done.returncode == 0, done.stderr
    assert not sandbox.trust_dir.joinpath("reconciler-fleet-ca.crt").exists()


def test_a_fleet_gateway_watches_the_repository_link_and_its_layers(
    sandbox: Sandbox, pki: Pki
) -> None:
    from reconciler.daemon.watch import watch_specs

    repo = make_fleet(sandbox.base, pki)
    link = sandbox.base / "current"
    link.symlink_to(repo.name)  # git-sync's link to the checked-out worktree
    sandbox.state = StateDir(link / "gateways" / "gw-a")
    specs = watch_specs(sandbox.settings())
    parents = {(s.path, s.name) for s in specs if s.role == "parent"}
    assert (str(sandbox.base), "current") in parents, "a swap of the link starts a pass"
    watched = {s.path for s in specs if s.role == "state" and s.recursive}
    assert str(repo / "common") in watched
    assert str(repo / "gateways" / "gw-a") in watched
    assert str(repo) not in watched, "not every gateway's files"


def test_fleet_toml_must_be_a_small_regular_file(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    (repo / "fleet.toml").unlink()
    (tmp_path / "elsewhere.toml").write_text('shared = ["common"]\n')
    (repo / "fleet.toml").symlink_to(tmp_path / "elsewhere.toml")
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    assert "error: ../../fleet.toml: is a symbolic link: not followed" in errors_of(evaluation)

    (repo / "fleet.toml").unlink()
    (repo / "fleet.toml").write_text('shared = ["common"]\n' + "#" * 70000 + "\n")
    _, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    assert "over the limit of 65536" in errors_of(evaluation)


def test_a_shared_profile_with_a_credential_file_applies_to_every_gateway(
    tmp_path: Path, pki: Pki
) -> None:
    repo = make_fleet(tmp_path, pki)
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "relay-password").write_bytes(b"shared-relay-password\n")
    StateDir(repo / "common").profile(
        "relay", f'url = "smtps://relay.example.com"\npassword_file = "{keys}/relay-password"\n'
    )
    for name in ("gw-a", "gw-b"):
        _, evaluation = composed(repo / "gateways" / name, (keys,))
        assert evaluation.desired is not None, errors_of(evaluation)
        relay = next(p for p in evaluation.desired.profiles if p.name == "relay")
        assert [c.value.reveal() for c in relay.credentials] == [b"shared-relay-password\n"]


def test_no_secrets_skips_a_shared_profiles_credential_file(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    StateDir(repo / "common").profile(
        "relay", 'url = "smtps://relay.example.com"\npassword_file = "/run/secrets/relay/pw"\n'
    )
    inp = read_snapshot(repo / "gateways" / "gw-a", no_secrets=True)
    evaluation = evaluate(inp, datetime.now(UTC))
    assert evaluation.desired is not None, errors_of(evaluation)
    assert [s.path for s in inp.skipped] == ["/run/secrets/relay/pw", "tls/key.pem"]


def _link(repo: Path, name: str, target: str) -> None:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, repo / name)


LINKED_LAYERS = {
    # The issue's: a link deep in the tree makes a gateway's directory a shared layer.
    "through-a-deep-link": (("deep/a/gw", "../../gateways"), "deep/a/gw/gw-b", "gateways/gw-b"),
    "a-link-to-a-gateway": (("gwlink", "gateways/gw-b"), "gwlink", "gateways/gw-b"),
    "a-link-to-git": (("meta", ".git"), "meta", ".git"),
    "the-same-layer-twice": (("alias", "common"), "alias", "same directory as common"),
}


@pytest.mark.parametrize(("link", "layer", "words"), LINKED_LAYERS.values(), ids=LINKED_LAYERS)
def test_a_layer_is_judged_where_its_links_lead(
    tmp_path: Path, pki: Pki, link: tuple[str, str], layer: str, words: str
) -> None:
    repo = make_fleet(tmp_path, pki)
    (repo / ".git").mkdir()
    StateDir(repo / ".git").profile("leaked", 'url = "smtps://leak.example.com"\n')
    StateDir(repo / "gateways" / "gw-b").profile("only-b", 'url = "smtps://b.example.com"\n')
    _link(repo, *link)
    (repo / "fleet.toml").write_text(f'shared = ["common", "{layer}"]\n')
    inp, evaluation = composed(repo / "gateways" / "gw-a")
    assert evaluation.desired is None
    [problem] = [f for f in evaluation.errors if f.file == "../../fleet.toml"]
    assert problem.field == "shared"
    assert layer in problem.reason
    assert words in problem.reason
    assert not {"only-b", "leaked"} & {name for name, _ in inp.profiles}


def test_a_gateway_directory_linked_to_a_layer_is_no_gateway(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    StateDir(repo / "common").gateway(SHARED_GATEWAY)
    os.symlink("../common", repo / "gateways" / "gw-x")
    _, evaluation = composed(repo / "gateways" / "gw-x")
    assert evaluation.desired is None
    assert "leads to common, outside gateways/" in errors_of(evaluation)


def _located(repo: Path, gateway: str = "gw-a") -> list[tuple[str, str | None, int | None]]:
    from reconciler.cli.findings import validate_states

    [report] = validate_states([repo / "gateways" / gateway], no_secrets=True)
    return [(f.file, f.field, f.line) for f in report.findings if f.severity == "error"]


def test_a_finding_in_a_gateways_own_file_is_on_its_own_line(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    own = (
        "# mx1's own settings\n#\n#\n\n"
        + IDENTITY
        + "\n\n[smtp_inbound]\n# why\ntls = 'sometimes'\n"
    )
    (repo / "gateways" / "gw-a" / "gateway.toml").write_text(own)
    line = own.splitlines().index("tls = 'sometimes'") + 1
    assert ("gateway.toml", "smtp_inbound.tls", line) in _located(repo)


def test_a_finding_on_a_value_a_layer_wrote_names_the_layers_file_and_line(
    tmp_path: Path, pki: Pki
) -> None:
    repo = make_fleet(tmp_path, pki)
    shared = "# fleet defaults\n\n" + SHARED_GATEWAY
    StateDir(repo / "common").gateway(shared)
    (repo / "gateways" / "gw-a" / "gateway.toml").write_text("[policy]\nmin_days_valid = 3\n")
    line = shared.splitlines().index("https = true") + 1
    assert ("../../common/gateway.toml", "console.https", line) in _located(repo)


def test_a_typo_in_a_shared_gateway_toml_gets_its_line(tmp_path: Path, pki: Pki) -> None:
    repo = make_fleet(tmp_path, pki)
    StateDir(repo / "common").gateway("[console]\nhttps = true\n\n[policy]\nmin_day_valid = 14\n")
    assert ("../../common/gateway.toml", "policy.min_day_valid", 5) in _located(repo)
