"""The composite GitHub Action (action.yml): its shell steps, extracted and run as a runner would.

The one step that cannot run here is `actions/setup-python` (it downloads a Python build from
GitHub); this machine's Python stands in for it, put on PATH as `python` as that step does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tests.helpers.clone import project_clone
from tests.helpers.state import GITOPS_GATEWAY, Pki, StateDir

ACTION = yaml.safe_load((REPO / "action.yml").read_text())
_EXPRESSION = re.compile(r"\$\{\{\s*inputs\.([a-z0-9-]+)\s*\}\}")


def _steps() -> list[dict[str, object]]:
    runs = ACTION["runs"]
    assert runs["using"] == "composite"
    return list(runs["steps"])


def _env_of(step: dict[str, object], inputs: dict[str, str]) -> dict[str, str]:
    """A step's `env:`, with `${{ inputs.NAME }}` evaluated as the runner does."""
    values = {name: spec.get("default", "") for name, spec in ACTION["inputs"].items()}
    values.update(inputs)
    env = {}
    for name, value in dict(step.get("env", {})).items():  # type: ignore[call-overload]
        text = str(value)
        env[name] = _EXPRESSION.sub(lambda m: values[m.group(1)], text)
        assert "${{" not in env[name], f"unsupported expression in {name}: {value}"
    return env


def run_steps(
    workspace: Path, action_path: Path, runner_temp: Path, inputs: dict[str, str], only: set[str]
) -> subprocess.CompletedProcess[str]:
    """Run the named `run` steps in order in bash, as GitHub's runner would; the last result."""
    bin_dir = runner_temp / "setup-python-bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    result = None
    for step in _steps():
        if step.get("name") not in only:
            continue
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            GITHUB_ACTION_PATH=str(action_path),
            GITHUB_WORKSPACE=str(workspace),
            RUNNER_TEMP=str(runner_temp),
            **_env_of(step, inputs),
        )
        assert step["shell"] == "bash"
        result = subprocess.run(  # noqa: PLW1510 - the exit code is an assertion
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", str(step["run"])],
            capture_output=True,
            text=True,
            env=env,
            cwd=workspace,
            timeout=600,
        )
        if result.returncode != 0:
            return result
    assert result is not None
    return result


def test_inputs_reach_scripts_only_through_the_environment() -> None:
    """`${{ }}` pasted into a script is an injection hole (a branch name with `$(...)`)."""
    steps = _steps()
    assert steps[0]["uses"].startswith("actions/setup-python@")  # type: ignore[union-attr]
    for step in steps:
        if "run" in step:
            assert "${{" not in str(step["run"]), step["name"]
            _env_of(step, {})


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_action_installs_and_annotates_a_broken_chain(tmp_path: Path, pki: Pki) -> None:
    action_path = tmp_path / "action"
    project_clone(action_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    workspace = tmp_path / "workspace"
    for name in ("gw-a", "gw-b"):
        state = StateDir(workspace / name)
        state.write("gateway.toml", GITOPS_GATEWAY)
        state.write("tls/cert.pem", pki.chain())

    installed = run_steps(workspace, action_path, runner_temp, {}, {"Install reconciler"})
    assert installed.returncode == 0, installed.stderr
    assert (runner_temp / "reconciler-venv/bin/reconciler").exists()

    inputs = {"states": "gw-a gw-b"}
    good = run_steps(workspace, action_path, runner_temp, inputs, {"Validate"})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "2 states: 2 valid, 0 invalid" in good.stdout
    assert "::notice title=no-secrets::" in good.stdout

    chain = pki.leaf.cert_pem + pki.other_ca.cert_pem
    (workspace / "gw-b/tls/cert.pem").write_bytes(chain)
    bad = run_steps(workspace, action_path, runner_temp, inputs, {"Validate"})
    assert bad.returncode == 1
    assert "::error file=gw-b/tls/cert.pem,line=1,col=1,title=chain-order::" in bad.stdout

    with_key = run_steps(
        workspace, action_path, runner_temp, {**inputs, "no-secrets": "false"}, {"Validate"}
    )
    assert with_key.returncode == 1
    assert "title=key-outside-key-dirs::" in with_key.stdout
