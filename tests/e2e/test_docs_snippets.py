"""Every block of README.md and docs/ runs as written, in a sandboxed host, and a block that shows
output shows what the program prints (tests/helpers/docsnippets.py says how each kind is run)."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from reconciler.config import load_settings
from tests.helpers import REPO
from tests.helpers.docsnippets import (
    LANGUAGES,
    Host,
    Snippet,
    console_steps,
    matches,
    pages,
    sandbox_problem,
    snippets,
)
from tests.helpers.prometheus import require_prometheus_tool

ALL = [s for page in pages() for s in snippets(page)]
RUN_IN_SANDBOX = {"sh", "console", "python"}
SANDBOX_PAGES = sorted(
    {s.page for s in ALL if not s.skipped and (s.language in RUN_IN_SANDBOX or "file" in s.options)}
)


def test_every_block_says_what_it_is() -> None:
    unknown = [f"{s.where}: {s.language or '(none)'}" for s in ALL if s.language not in LANGUAGES]
    assert not unknown, f"give each block a language of {sorted(LANGUAGES)}: {unknown}"
    assert len(ALL) > 60


def test_every_skip_says_why_and_skips_only_what_would_run() -> None:
    wrong = [
        s.where
        for s in ALL
        if s.skipped is not None and (len(s.skipped) < 20 or s.language not in RUN_IN_SANDBOX)
    ]
    assert not wrong, wrong
    ran = sum(1 for s in ALL if s.language in RUN_IN_SANDBOX and not s.skipped)
    assert ran > 15, "most runnable blocks run"


def test_the_output_comparison_finds_what_it_must() -> None:
    shown = (
        "TIME  SEQ  EVENT\n2026-11-27T18:03:13Z   14  pass.started  sha256:66abb30a3a13\n...\nend"
    )
    printed = (
        "TIME SEQ EVENT\n2027-01-02T03:04:05Z 14 pass.started sha256:0123456789ab\na\nb\nend\n"
    )
    assert matches(shown, printed)
    assert not matches(shown, printed.replace("pass.started", "pass.failed"))
    assert not matches("error: x [rule]", "error: y [rule]")
    assert matches("applied 3 changes in 0.4 s", "applied 3 changes in 12.0 s")


def _sandbox() -> None:
    problem = sandbox_problem()
    if problem is not None:
        if os.environ.get("RECONCILER_REQUIRE_SANDBOX"):
            pytest.fail(problem)
        pytest.skip(problem)


def _run_block(host: Host, snippet: Snippet) -> str | None:
    """What is wrong with one block as the sandbox runs it (None: nothing)."""
    options = snippet.options
    setups = ("host", *filter(None, options.get("setup", "").split(",")))
    cwd = options.get("cwd")
    if snippet.language == "sh":
        done = host.run(snippet.body, cwd=cwd, setups=setups, args=options.get("args", ""))
        expected = int(options.get("exit", "0"))
        if done.returncode != expected:
            log = (
                (host.base / "setup.log").read_text() if (host.base / "setup.log").exists() else ""
            )
            return (
                f"exit {done.returncode}, not {expected}:\n{done.stdout}{done.stderr}{log[-2000:]}"
            )
        return None
    if snippet.language == "python":
        script = host.base / "snippet.py"
        script.write_text(snippet.body)
        done = host.run(f"python3 {script} {options.get('args', '')}", cwd=cwd, setups=setups)
        return None if done.returncode == 0 else f"exit {done.returncode}:\n{done.stderr}"
    if snippet.language == "console":
        steps = console_steps(snippet.body)
        if not steps:
            return "a console block shows no `$ ` command"
        separator = "@@docs-step@@"
        script = "set +e\n" + "".join(
            f"{{ {command}\n}} 2>&1; echo {separator}\n" for command, _ in steps
        )
        done = host.run(script, cwd=cwd, setups=setups)
        printed = done.stdout.split(f"{separator}\n")
        for (command, shown), output in zip(steps, printed, strict=False):
            if not matches(shown, output):
                return f"`{command}` printed:\n{output}\nbut the page shows:\n{shown}"
        return None
    if snippet.language == "json" and "file" in options:
        done = host.run(f"cat {options['file']}", cwd=cwd, setups=setups)
        if done.returncode != 0:
            return done.stderr
        if json.loads(done.stdout) != json.loads(snippet.body):
            return f"{options['file']} holds:\n{done.stdout}"
        return None
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", SANDBOX_PAGES, ids=[p.name for p in SANDBOX_PAGES])
def test_the_blocks_of_each_page_run_as_written(page: Path, tmp_path: Path) -> None:
    _sandbox()
    host = Host(tmp_path)
    failures = []
    for snippet in snippets(page):
        if snippet.skipped is None:
            problem = _run_block(host, snippet)
            if problem is not None:
                failures.append(f"{snippet.where} ({snippet.language}): {problem}")
    assert not failures, "\n\n".join(failures)


# -- blocks checked here, without the sandbox ---------------------------------------------------


def _schema(which: str) -> jsonschema.Draft7Validator:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "schema", which],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return jsonschema.Draft7Validator(json.loads(done.stdout))


def _named_file(body: str) -> str:
    """The file a TOML block is: its first comment line that is not a `#:` directive."""
    for line in body.splitlines():
        if line.startswith("#:"):
            continue
        if not line.startswith("#"):
            return ""
        return line.removeprefix("#").strip().split(" ")[0].rstrip(",:;")
    return ""


def _validate_profile(body: str, tmp_path: Path) -> str | None:
    state = tmp_path / "state"
    shutil_rm(state)
    (state / "profiles").mkdir(parents=True)
    (state / "gateway.toml").write_text("")
    (state / "profiles" / "example.toml").write_text(body)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--no-secrets", "--state", str(state)],
        capture_output=True, text=True, check=False, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")},
    )  # fmt: skip
    return None if done.returncode == 0 else done.stdout + done.stderr


def shutil_rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


TOML = [s for s in ALL if s.language == "toml"]


@pytest.mark.parametrize("snippet", TOML, ids=[s.where for s in TOML])
def test_each_toml_block_loads_as_the_file_it_names(snippet: Snippet, tmp_path: Path) -> None:
    name = _named_file(snippet.body)
    parsed = tomllib.loads(snippet.body)
    if name.endswith("reconciler.toml"):
        path = tmp_path / "reconciler.toml"
        path.write_text(snippet.body)
        load_settings(path)
    elif name.endswith("gateway.toml"):
        errors = [e.message for e in _schema("gateway").iter_errors(parsed)]
        assert not errors, errors
    elif "profiles/" in name:
        errors = [e.message for e in _schema("profile").iter_errors(parsed)]
        assert not errors, errors
        assert _validate_profile(snippet.body, tmp_path) is None
    else:
        assert name in (".taplo.toml", "fleet.toml"), (
            f"{snippet.where}: name the file in the block's first line (# reconciler.toml, "
            "# gateway.toml, # profiles/NAME.toml)"
        )


OTHER = [s for s in ALL if s.language in ("yaml", "json", "ini")]


@pytest.mark.parametrize("snippet", OTHER, ids=[s.where for s in OTHER])
def test_each_yaml_json_and_ini_block_parses(snippet: Snippet) -> None:
    if snippet.language == "yaml":
        assert yaml.safe_load(snippet.body) is not None
    elif snippet.language == "json":
        json.loads(snippet.body)
    else:
        configparser.ConfigParser(strict=True, interpolation=None).read_string(snippet.body)


def test_each_promql_block_parses(tmp_path: Path) -> None:
    """promtool parses them here; the fleet bench's test runs them against real daemons."""
    blocks = [s for s in ALL if s.language == "promql"]
    assert blocks
    rules = {
        "groups": [
            {
                "name": "docs",
                "rules": [
                    {"record": f"docs:block_{n}", "expr": s.body.strip()}
                    for n, s in enumerate(blocks)
                ],
            }
        ]
    }
    path = tmp_path / "docs.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [require_prometheus_tool("promtool"), "check", "rules", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_page_with_promql_goes_to_the_fleet_bench() -> None:
    with_promql = {s.page.relative_to(REPO).as_posix() for s in ALL if s.language == "promql"}
    test = (REPO / "tests" / "e2e" / "test_fleet_bench.py").read_text()
    assert all(f'"{page}"' in test or page.split("/")[-1] in test for page in with_promql)
