"""The pre-commit hook, with the real pre-commit: a bad desired state is blocked, a good one passes.

pre-commit builds the hook's environment itself (a virtualenv, `pip install` of this project from
a clone of it, dependencies from the package index), exactly as it does on a user's machine; this
takes a while the first time, so one test walks through every step with one environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.clone import GIT_ENV, git, project_clone
from tests.helpers.state import GITOPS_GATEWAY, Pki, StateDir

ENV_BUILD_TIMEOUT = 600


def _pre_commit(cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env.update(GIT_ENV, PRE_COMMIT_HOME=str(home))
    return subprocess.run(  # noqa: PLW1510 - the exit code is an assertion
        [str(Path(sys.executable).parent / "pre-commit"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=ENV_BUILD_TIMEOUT,
    )


@pytest.mark.slow
@pytest.mark.timeout(3 * ENV_BUILD_TIMEOUT)
def test_hook_blocks_a_bad_commit_and_passes_a_good_one(tmp_path: Path, pki: Pki) -> None:
    clone = tmp_path / "reconciler"
    sha = project_clone(clone)
    home = tmp_path / "pre-commit-home"
    repo = tmp_path / "gitops"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    state = StateDir(repo)
    state.write("gateway.toml", GITOPS_GATEWAY)  # the key: a Secret on the gateway, not in git
    state.write("tls/cert.pem", pki.intermediate.cert_pem + pki.leaf.cert_pem)  # wrong order
    state.trust("partner-ca", pki.other_ca.cert_pem)
    git(repo, "add", "-A")

    # try-repo: the hook as published by the clone, run on the staged files.
    tried = _pre_commit(repo, home, "try-repo", str(clone), "reconciler-validate", "--ref", sha)
    assert tried.returncode == 1, tried.stdout + tried.stderr
    assert "[chain-order]" in tried.stdout, tried.stdout

    # The same hook installed the way users do, blocking `git commit`.
    state.write(
        ".pre-commit-config.yaml",
        f"repos:\n- repo: {clone}\n  rev: {sha}\n  hooks:\n  - id: reconciler-validate\n",
    )
    installed = _pre_commit(repo, home, "install")
    assert installed.returncode == 0, installed.stderr
    git(repo, "add", "-A")
    blocked = git(repo, "commit", "-m", "bad chain", check=False)
    assert blocked.returncode != 0
    assert "chain not in issuing order" in blocked.stdout + blocked.stderr
    assert git(repo, "rev-parse", "--verify", "HEAD", check=False).returncode != 0

    state.write("tls/cert.pem", pki.chain())
    git(repo, "add", "-A")
    passed = git(repo, "commit", "-m", "leaf first", check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "reconciler validate" in passed.stdout + passed.stderr
    assert git(repo, "log", "--format=%s").stdout.split("\n")[0] == "leaf first"

    # A commit that only deletes a file still runs it (always_run: no file list to filter).
    git(repo, "rm", "-q", "tls/cert.pem")
    deleted = git(repo, "commit", "-m", "drop the certificate", check=False)
    assert deleted.returncode != 0
    assert "tls/cert.pem: identity.cert: file does not exist [file-missing]" in (
        deleted.stdout + deleted.stderr
    )
