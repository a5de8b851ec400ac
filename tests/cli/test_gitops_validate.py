"""`validate` as a GitOps repository's CI runs it: no secrets, CI formats, rule ids, many states."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.core.desired import Finding
from reconciler.core.evaluate import evaluate
from reconciler.core.positions import toml_key_position
from reconciler.core.rules import RULES, secret_rules
from reconciler.source.state import read_snapshot
from reconciler.support import devpki
from tests.helpers import REPO
from tests.helpers.cli import REJECTED, WARNED
from tests.helpers.state import GITOPS_GATEWAY, SECRET_KEY_PATH, Pki, StateDir, standard_state


def _git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.test",
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def gitops_repo(path: Path, pki: Pki) -> StateDir:
    """A GitOps repository as good practice keeps it: certificates and settings, no private key
    (the key is a Secret mounted on the gateway), committed with real git."""
    state = StateDir(path)
    state.write("gateway.toml", GITOPS_GATEWAY)
    state.write("tls/cert.pem", pki.chain())
    state.trust("partner-ca", pki.other_ca.cert_pem)
    state.profile("relay", 'url = "smtps://relay.example.com"\n')
    _git(path, "init", "-q", "-b", "main")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "desired state")
    return state


def validate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, in a child process, as CI runs it: no settings, no RECONCILER_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    return subprocess.run(  # noqa: PLW1510 - the exit code is an assertion
        [sys.executable, "-m", "reconciler", "validate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def _begin_lines(pem: bytes) -> list[int]:
    lines = pem.decode().splitlines()
    return [n for n, line in enumerate(lines, start=1) if line.startswith("-----BEGIN")]


# -- --no-secrets ------------------------------------------------------------------------------


def test_repo_without_any_private_key_passes_with_no_secrets(tmp_path: Path, pki: Pki) -> None:
    repo = gitops_repo(tmp_path / "repo", pki).path
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in repo.rglob("*") if p.is_file())

    result = validate(repo, "--no-secrets", ".")

    assert result.returncode == 0, result.stderr
    assert "valid, revision " in result.stdout
    assert "checked without its key" in result.stdout
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1
    assert SECRET_KEY_PATH in skipped[0]
    for rule in secret_rules():
        assert rule in skipped[0]


def test_without_no_secrets_the_same_repo_is_rejected_as_before(tmp_path: Path, pki: Pki) -> None:
    repo = gitops_repo(tmp_path / "repo", pki).path
    result = validate(repo, "--state", ".")
    assert result.returncode == 1
    assert "an absolute key path must be inside one of key_dirs" in result.stderr
    assert "[key-outside-key-dirs]" in result.stderr


def test_a_git_ignored_relative_key_is_skipped_too(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    state.remove("tls/key.pem")
    assert validate(state.path, "--no-secrets", ".").returncode == 0
    plain = validate(state.path, ".")
    assert plain.returncode == 1
    assert "tls/key.pem: identity.key: file does not exist [file-missing]" in plain.stderr


def test_no_secrets_never_reads_a_key_that_is_there(tmp_path: Path, pki: Pki) -> None:
    """A SOPS-encrypted key kept in the repository is no PEM key: not read, not judged."""
    state = standard_state(tmp_path / "state", pki)
    state.write("tls/key.pem", "sops:\n  age: [...]\ndata: ENC[AES256_GCM,data:...]\n")
    assert validate(state.path, "--no-secrets", ".").returncode == 0
    plain = validate(state.path, ".")
    assert plain.returncode == 1
    assert "[key-pem]" in plain.stderr


def test_a_relative_key_path_leading_outside_is_still_an_error(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    text = (state.path / "gateway.toml").read_text().replace("tls/key.pem", "../key.pem")
    state.write("gateway.toml", text)
    result = validate(state.path, "--no-secrets", ".")
    assert result.returncode == 1
    assert "[path-escape]" in result.stderr


def _expired_leaf(state: StateDir, pki: Pki) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    leaf = devpki.issue(pki.intermediate, "gateway.test", not_before=start, days=300)
    state.write("tls/cert.pem", leaf.cert_pem + pki.intermediate.cert_pem)


def _self_signed(state: StateDir, pki: Pki) -> None:
    state.write("tls/cert.pem", devpki.issue(None, "gateway.test").cert_pem)


def _no_client_auth(state: StateDir, pki: Pki) -> None:
    leaf = devpki.issue(pki.intermediate, "gateway.test", eku=("server",))
    state.write("tls/cert.pem", leaf.cert_pem + pki.intermediate.cert_pem)


def _expired_trust(state: StateDir, pki: Pki) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    state.trust("old", devpki.make_ca("Old CA", not_before=start, days=10).cert_pem)


def _clear_text_required(state: StateDir, pki: Pki) -> None:
    state.write("gateway.toml", GITOPS_GATEWAY + "\n[policy]\nrequire_tls_outbound = true\n")
    state.profile("plain", 'url = "http://core.example.com"\n')


OTHER_RULES = {
    "leaf-validity": _expired_leaf,
    "leaf-self-signed": _self_signed,
    "leaf-eku": _no_client_auth,
    "trust-validity": _expired_trust,
    "profile-cleartext": _clear_text_required,
}


@pytest.mark.parametrize("rule", sorted(OTHER_RULES))
def test_no_secrets_still_runs_every_other_rule(rule: str, tmp_path: Path, pki: Pki) -> None:
    state = gitops_repo(tmp_path / "repo", pki)
    OTHER_RULES[rule](state, pki)
    inp = read_snapshot(state.path, no_secrets=True)
    findings = evaluate(inp, dt.datetime.now(dt.UTC)).findings
    assert rule in {f.rule for f in findings}, findings


# -- formats and positions ------------------------------------------------------------------------


def test_broken_chain_fails_with_a_github_annotation_on_the_right_line(
    tmp_path: Path, pki: Pki
) -> None:
    """Leaf, intermediate, then a foreign CA: certificate 2 is not issued by certificate 3, and
    the annotation points at certificate 2's BEGIN line."""
    state = gitops_repo(tmp_path / "repo", pki)
    chain = pki.leaf.cert_pem + pki.intermediate.cert_pem + pki.other_ca.cert_pem
    state.write("tls/cert.pem", chain)
    second = _begin_lines(chain)[1]
    assert second > 1

    result = validate(tmp_path, "--no-secrets", "--format", "github", "repo")

    assert result.returncode == 1
    annotations = [line for line in result.stdout.splitlines() if line.startswith("::error ")]
    assert len(annotations) == 1, result.stdout
    assert annotations[0].startswith(
        f"::error file=repo/tls/cert.pem,line={second},col=1,title=chain-order::"
    ), annotations[0]
    assert "certificate 2" in annotations[0]


def test_toml_findings_point_at_the_key(tmp_path: Path, pki: Pki) -> None:
    state = gitops_repo(tmp_path / "repo", pki)
    state.write("gateway.toml", GITOPS_GATEWAY.replace("https = true", "htps = true"))
    state.profile("api", 'url = "https://core.example.com"\n\ntransport_encryption = "none"\n')
    result = validate(state.path, "--no-secrets", "--format", "json", ".")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    found = {(f["rule"], f["path"], f["line"], f["col"]) for f in report["states"][0]["findings"]}
    assert ("toml-unknown-key", "gateway.toml", 6, 1) in found
    assert ("profile-te-not-allowed", "profiles/api.toml", 3, 1) in found
    assert report["valid"] is False
    assert report["states"][0]["skipped"][0]["field"] == "identity.key"


def test_toml_syntax_error_takes_tomllib_position(tmp_path: Path, pki: Pki) -> None:
    state = gitops_repo(tmp_path / "repo", pki)
    state.write("gateway.toml", '[console]\nhttps = true\ntls_policy = "modern\n')
    result = validate(state.path, "--no-secrets", "--format", "github", ".")
    assert result.returncode == 1
    assert re.search(
        r"^::error file=gateway.toml,line=3,col=\d+,title=toml-syntax::", result.stdout, re.M
    )


def test_key_positions_in_toml_text() -> None:
    text = (
        "# comment\n"
        "[identity]\n"
        'cert = "a"\n'
        "\n"
        "[ policy ]  # trailing\n"
        "  min_days_valid = 3\n"
        "console.https = true\n"
        '"quoted key" = 1\n'
    )
    assert toml_key_position(text, "identity.cert") == (3, 1)
    assert toml_key_position(text, "identity.key") == (2, 1)  # missing: its table
    assert toml_key_position(text, "policy.min_days_valid") == (6, 3)
    assert toml_key_position(text, "policy.console.https") == (7, 1)
    assert toml_key_position(text, "policy.quoted key") == (8, 1)
    assert toml_key_position(text, "smtp_inbound.tls") is None


def test_gitlab_code_quality_report(tmp_path: Path, pki: Pki) -> None:
    state = gitops_repo(tmp_path / "repo", pki)
    state.profile(
        "mx", 'url = "smtp://mx.example.com"\ntransport_encryption = "starttls-required"\n'
    )
    result = validate(tmp_path, "--no-secrets", "--format", "gitlab", "repo")
    assert result.returncode == 0, result.stderr
    issues = json.loads(result.stdout)
    assert [i["check_name"] for i in issues] == ["profile-starttls"]
    assert issues[0]["severity"] == "minor"
    assert issues[0]["location"] == {"path": "repo/profiles/mx.toml", "lines": {"begin": 1}}
    assert re.fullmatch(r"[0-9a-f]{64}", issues[0]["fingerprint"])


def test_control_characters_in_names_are_escaped_in_annotations(tmp_path: Path, pki: Pki) -> None:
    state = gitops_repo(tmp_path / "repo", pki)
    state.write("trust/evil\x1b[31m\nname.pem", pki.other_ca.cert_pem)
    result = validate(state.path, "--no-secrets", "--format", "github", ".")
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if "name-invalid" in line]
    assert len(lines) == 1
    assert "\x1b" not in result.stdout
    assert "file=trust/evil\\x1b[31m\\x0aname.pem," in lines[0]


# -- several states ------------------------------------------------------------------------------


def test_several_states_one_summary_one_exit_code(tmp_path: Path, pki: Pki) -> None:
    good = gitops_repo(tmp_path / "gw1", pki)
    other = gitops_repo(tmp_path / "gw2", pki)
    result = validate(tmp_path, "--no-secrets", "gw1", "gw2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2 states: 2 valid, 0 invalid; 0 errors, 0 warnings"

    other.write("tls/cert.pem", pki.intermediate.cert_pem + pki.leaf.cert_pem)
    result = validate(tmp_path, "--no-secrets", "gw1", "gw2")
    assert result.returncode == 1
    # Chain order, and the first certificate (the intermediate) being a CA: two errors.
    assert result.stderr.splitlines()[-1] == "2 states: 1 valid, 1 invalid; 2 errors, 0 warnings"
    assert "error: gw2/tls/cert.pem:1: identity.cert: chain not in issuing order" in result.stderr
    assert good.path.name not in result.stderr.split("chain not")[0].split("error:")[-1]


# -- rule ids ------------------------------------------------------------------------------------


def _ids_in_code() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "reconciler").rglob("*.py"):
        found |= set(re.findall(r'\brule="([^"]*)"', path.read_text()))
    return found


def test_every_rule_id_in_code_is_registered_and_every_registered_id_is_used() -> None:
    used = _ids_in_code()
    assert used - set(RULES) == set(), "rule ids used in code but not in core/rules.py"
    schema_ids = {"toml-unknown-key", "toml-missing-key", "toml-value"}  # core.schema.schema_rule
    assert set(RULES) - used - schema_ids == set(), "registered rule ids no code uses"
    assert "" not in used


def test_every_registered_rule_is_documented_in_its_own_words() -> None:
    text = (REPO / "docs" / "rules.md").read_text()
    headings = re.findall(r"^## (\S+)$", text, re.M)
    assert headings == list(RULES)
    for rule, doc in RULES.items():
        section = text.split(f"## {rule}\n", 1)[1].split("\n## ", 1)[0]
        assert f"- **What:** {doc.what}" in section
        assert f"- **Why:** {doc.why}" in section
        assert f"- **Fix:** {doc.fix}" in section


@pytest.mark.parametrize("case", sorted({**REJECTED, **WARNED}))
def test_every_finding_of_a_bad_state_has_a_registered_rule(
    case: str, tmp_path: Path, pki: Pki
) -> None:
    state = standard_state(tmp_path / "state", pki)
    mutate = {**REJECTED, **WARNED}[case][0]
    mutate(state, pki, tmp_path)
    findings = evaluate(read_snapshot(state.path), dt.datetime.now(dt.UTC)).findings
    assert findings
    for finding in findings:
        assert finding.rule in RULES, finding


def test_profile_credential_files_are_secrets_for_no_secrets(tmp_path: Path, pki: Pki) -> None:
    """A relay password and a Vault API key live in mounted secrets CI does not have."""
    repo = gitops_repo(tmp_path / "repo", pki)
    repo.profile(
        "relay",
        'servers = ["smtps://relay1.example.com", "smtps://relay2.example.com"]\n'
        'password_file = "/run/secrets/relay/password"\n',
    )
    repo.profile(
        "vault", 'type = "vault"\nurl = "https://vault.example.com"\n'
        'api_key_file = "/run/secrets/vault/apikey"\n',
    )  # fmt: skip

    result = validate(repo.path, "--no-secrets", ".")

    assert result.returncode == 0, result.stderr
    skipped = "\n".join(line for line in result.stdout.splitlines() if line.startswith("skipped"))
    assert "/run/secrets/relay/password" in skipped
    assert "/run/secrets/vault/apikey" in skipped
    assert "credential-file" in skipped
    plain = validate(repo.path, "--state", ".")
    assert plain.returncode == 1
    assert "[credential-file]" in plain.stderr
    # The reference itself is still checked: an SMTP password on a Vault profile is an error.
    repo.profile("vault", 'type = "vault"\nurl = "https://vault.example.com"\n'
                 'password_file = "/run/secrets/vault/apikey"\n')  # fmt: skip
    wrong = validate(repo.path, "--no-secrets", ".")
    assert wrong.returncode == 1
    assert "[credential-ref]" in wrong.stderr


# -- what a CI runner would read as a command ------------------------------------------------------

CI_COMMAND = re.compile(r"##\[|##vso\[")
WELL_FORMED = re.compile(r"::(error|warning|notice) [^:\n]*::[^\n]*")


def _fleet_with_a_gateway_named(tmp_path: Path, pki: Pki, name: str) -> Path:
    """A fleet repository whose first gateway directory has `name`, then a valid one, gw-b."""
    repo = tmp_path / "repo"
    (repo / "common").mkdir(parents=True)
    (repo / "fleet.toml").write_text('shared = ["common"]\n')
    for gateway in (name, "gw-b"):
        state = standard_state(repo / "gateways" / gateway, pki)
        state.trust("Bad Name", pki.other_ca.cert_pem)  # one error each, to annotate
    return repo


CI_HOSTILE = {
    "fleet-gateway-directory": ("fleet", "##[stop-commands]x"),
    "trust-file-name": ("trust/##[error]x.pem", ""),
    "toml-key": ("gateway.toml", '"##[add-mask]secret" = 1\n'),
    "azure-in-a-name": ("trust/x##vso[task.setvariable variable=a]1.pem", ""),
}


@pytest.mark.parametrize("fmt", ["text", "json", "github", "gitlab"])
@pytest.mark.parametrize(("where", "what"), CI_HOSTILE.values(), ids=CI_HOSTILE.keys())
def test_no_line_in_any_ci_format_holds_a_runner_command(
    tmp_path: Path, pki: Pki, fmt: str, where: str, what: str
) -> None:
    if where == "fleet":
        target = _fleet_with_a_gateway_named(tmp_path, pki, what)
    else:
        target = standard_state(tmp_path / "repo", pki).path
        path = target / where
        path.write_text(path.read_text() + what if path.exists() else "x\n")
    result = validate(tmp_path, "--format", fmt, "repo")
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert not [line for line in lines if CI_COMMAND.search(line)]
    commands = [line for line in lines if line.lstrip().startswith("::")]
    assert all(WELL_FORMED.fullmatch(line) for line in commands), commands
    if fmt == "github" and where == "fleet":
        # The valid gateway after the hostile one still gets its annotation.
        assert any("gw-b" in line for line in commands), commands


def test_a_plain_github_line_never_starts_a_command() -> None:
    from reconciler.cli.findings import StateReport, github_lines
    from reconciler.core.evaluate import Evaluation

    finding = Finding("error", "x.toml", None, "bad", rule="toml-syntax")
    report = StateReport(Path("::error::forged"), Evaluation(None, (finding,)), (finding,), "r")
    lines = github_lines([report, report])
    assert lines[0].startswith("::error file=")
    plain = [line for line in lines if not line.startswith("::error file=")]
    assert plain
    assert not [line for line in plain if line.lstrip().startswith("::")]


def _fingerprints(paths: list[Path], cwd: Path, now: dt.datetime) -> list[tuple[str, str]]:
    import contextlib

    from reconciler.cli.findings import gitlab_report, validate_states

    with contextlib.chdir(cwd):  # as CI runs it: paths relative to the repository's checkout
        issues = gitlab_report(validate_states(paths, no_secrets=True, now=now))
    return [(str(i["check_name"]), str(i["fingerprint"])) for i in issues]


def test_gitlab_fingerprints_are_one_per_issue_for_gateways_sharing_a_layer(
    tmp_path: Path, pki: Pki
) -> None:
    repo = tmp_path / "repo"
    (repo / "fleet.toml").parent.mkdir()
    (repo / "fleet.toml").write_text('shared = ["common"]\n')
    StateDir(repo / "common").write("trust/notes.txt", "stray\n")  # one warning, in the layer
    for name in ("gw-a", "gw-b"):
        state = StateDir(repo / "gateways" / name)
        state.write("gateway.toml", GITOPS_GATEWAY)
        state.write("tls/cert.pem", pki.chain())
    found = _fingerprints([repo], tmp_path, dt.datetime.now(dt.UTC))
    stray = [fingerprint for rule, fingerprint in found if rule == "name-ignored"]
    assert len(stray) == 2
    assert len(set(stray)) == 2


def test_gitlab_fingerprints_stay_when_only_the_message_changes(tmp_path: Path, pki: Pki) -> None:
    state = gitops_repo(tmp_path / "repo", pki)
    leaf = devpki.issue(pki.intermediate, "gateway.test", days=25)
    state.write("tls/cert.pem", pki.chain(leaf))
    today = dt.datetime.now(dt.UTC)
    first = _fingerprints([state.path], tmp_path, today)
    later = _fingerprints([state.path], tmp_path, today + dt.timedelta(days=1))
    assert "leaf-expiring" in dict(first)  # "in 24 days", then "in 23 days"
    assert first == later


def test_gitlab_fingerprints_differ_for_the_same_finding_twice(tmp_path: Path, pki: Pki) -> None:
    state = gitops_repo(tmp_path / "repo", pki)
    # The same CA twice in one file, and in another file: two equal warnings on that file.
    state.trust("zz-again", pki.other_ca.cert_pem + pki.other_ca.cert_pem)
    found = _fingerprints([state.path], tmp_path, dt.datetime.now(dt.UTC))
    duplicates = [fingerprint for rule, fingerprint in found if rule == "trust-duplicate"]
    assert len(duplicates) == 2
    assert len(set(duplicates)) == 2
