"""The reference pages list what the program has: every metric with its labels, every setting,
every command and flag; the docs pin no release that does not exist; the shipped files name no
file that does not exist."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

from reconciler.cli.parser import build_parser
from reconciler.config.model import Settings
from reconciler.daemon.metrics import Metrics
from tests.helpers import REPO

DOCS = REPO / "docs"


def _table_first_column(page: Path, heading: str) -> list[str]:
    """The backquoted first cells of the first table under `heading`."""
    text = page.read_text(encoding="utf-8").split(heading, 1)[1]
    rows = []
    for line in text.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            rows.append(line.split("`")[1])
        elif rows and not line.startswith("|"):
            break
    return rows


def _series_in_code() -> set[str]:
    """Each metric of the daemon as exposed: name{label,...}."""
    metrics = Metrics(["a-hook"], per_trust_entry=True)
    found = set()
    for attribute in [*vars(metrics).values(), *vars(metrics.audit).values()]:
        name = getattr(attribute, "_name", None)
        if not isinstance(name, str) or not name.startswith("reconciler_"):
            continue
        labels = tuple(getattr(attribute, "_labelnames", ()))
        if getattr(attribute, "_type", None) == "counter":
            name += "_total"
        found.add(f"{name}{{{','.join(labels)}}}" if labels else name)
    return found


def test_metrics_md_lists_every_series_with_its_labels() -> None:
    documented = set(_table_first_column(DOCS / "metrics.md", "## Reference"))
    code = _series_in_code()
    assert len(code) > 20, code
    only_documented, only_in_code = sorted(documented - code), sorted(code - documented)
    assert documented == code, f"documented only: {only_documented}; code only: {only_in_code}"


def test_settings_md_lists_every_setting() -> None:
    documented = set(_table_first_column(DOCS / "settings.md", "## Reference"))
    assert documented == set(Settings.model_fields)


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, list[str]]:
    """Every command line (`audit show`) and its option strings."""
    found: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, f"{prefix}{name} "))
    if prefix:
        found[prefix.strip()] = [
            option
            for action in parser._actions
            for option in action.option_strings
            if option not in ("-h", "--help", "--config", "--state", "--root")
        ]
    return found


def test_cli_md_has_every_command_and_flag() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    table = text.split("## Commands", 1)[1].split("\n\n", 2)[1]
    missing = []
    for command, options in _commands(build_parser()).items():
        rows = [line for line in table.splitlines() if line.startswith(f"| `{command}")]
        if not rows and command != "audit":
            missing.append(command)
        missing += [f"{command} {o}" for o in options if not any(o in row for row in rows)]
    top = [o for a in build_parser()._actions for o in a.option_strings if o.startswith("--")]
    missing += [o for o in top if o not in text]
    assert not missing, missing


def _tags() -> set[str]:
    listed = subprocess.run(
        ["git", "tag", "--list"], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    return set(listed.stdout.split())


def test_the_docs_pin_only_releases_that_exist() -> None:
    """A pinned tag or index version must be a tag here; until the first release the docs pin
    a commit or a wheel (docs/releasing.md says when that changes)."""
    tags = _tags()
    pins = re.compile(r"(?:rev:\s*|@)(v\d+\.\d+\.\d+)|mailgw-tls-reconciler==(\d+\.\d+\.\d+)")
    wrong = []
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md")), REPO / "action.yml"]:
        for tag, version in pins.findall(page.read_text(encoding="utf-8")):
            if (tag or f"v{version}") not in tags:
                wrong.append(f"{page.name}: {tag or version}")
    assert not wrong, f"pinned releases that do not exist: {wrong}"


def test_the_pin_pattern_finds_what_it_must() -> None:
    text = "rev: v1.2.3\nuses: o/r@v0.1.0\npip install mailgw-tls-reconciler==0.1.0\n"
    assert (
        len(
            re.findall(
                r"(?:rev:\s*|@)(v\d+\.\d+\.\d+)|mailgw-tls-reconciler==(\d+\.\d+\.\d+)", text
            )
        )
        == 3
    )


def test_shipped_files_name_only_files_that_exist() -> None:
    """A repository path in a shipped file's comments (settings, manifests, the unit) must be a
    file the repository has: an operator follows it."""
    named = re.compile(
        r"(?<![\w/.$-])((?:deploy|docs|systemd|hooks|tests)/[\w./-]+"
        r"\.(?:toml|yaml|yml|md|py|sh|service|conf))(?![\w.])"
    )
    shipped = [
        *REPO.glob("deploy/**/*.toml"),
        *REPO.glob("deploy/**/*.yaml"),
        *REPO.glob("systemd/*"),
        REPO / "Containerfile",
    ]
    missing = []
    for path in shipped:
        for name in named.findall(path.read_text(encoding="utf-8")):
            if not (REPO / name).exists():
                missing.append(f"{path.relative_to(REPO)}: {name}")
    assert not missing, missing
