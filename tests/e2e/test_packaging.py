"""Packaging: --version, the shipped hooks/unit/examples in the wheel, an sdist without tests."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.version import DISTRIBUTION
from tests.helpers import REPO
from tests.helpers.treebuild import building_in_the_tree

BIN = Path(sys.executable).parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Building the sdist and a wheel from it (isolated build environments) takes a minute or two.
BUILDS = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("packaging-build")]


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd, timeout=600)


def test_version_prints_the_declared_version() -> None:
    result = run(str(BIN / "reconciler"), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"reconciler {PROJECT['version']}\n"
    assert PROJECT["name"] == DISTRIBUTION


def test_version_needs_no_command_and_no_settings(tmp_path: Path) -> None:
    result = run(str(BIN / "reconciler"), "--config", str(tmp_path / "absent.toml"), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reconciler ")


def test_print_share_dir_finds_the_source_tree_of_an_editable_install() -> None:
    result = run(str(BIN / "reconciler"), "--print-share-dir")
    assert result.returncode == 0, result.stderr
    share = Path(result.stdout.strip())
    assert (share / "hooks" / "nginx-reload").is_file()
    assert (share / "systemd" / "reconciler.service").is_file()


def builds(test: Callable[..., None]) -> Callable[..., None]:
    for mark in BUILDS:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist, and a wheel built from that sdist (what a user of the sdist gets)."""
    out = tmp_path_factory.mktemp("dist")
    with building_in_the_tree():
        result = run(sys.executable, "-m", "build", "--outdir", str(out), str(REPO))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


@builds
def test_wheel_ships_every_hook_the_unit_examples_and_license(built: Path) -> None:
    (wheel,) = built.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"{wheel.name.split('-')[0]}-{PROJECT['version']}.data/data/share/reconciler"
    hooks = sorted(p.name for p in (REPO / "hooks").iterdir() if p.is_file())
    assert hooks, "hooks/ is empty"
    for hook in hooks:
        assert f"{data}/hooks/{hook}" in names, hook
    for name in (p.name for p in (REPO / "systemd").iterdir() if p.is_file()):
        assert f"{data}/systemd/{name}" in names, name
    assert f"{data}/docs/install-host.md" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "reconciler = reconciler.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@builds
def test_installed_wheel_finds_its_shipped_files(built: Path, tmp_path: Path) -> None:
    (wheel,) = built.glob("*.whl")
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", str(venv)).returncode == 0
    # Only the standard library is needed for --version and --print-share-dir: no dependencies.
    pip = run(str(venv / "bin" / "pip"), "install", "--no-index", "--no-deps", str(wheel))
    assert pip.returncode == 0, pip.stderr
    python = str(venv / "bin" / "python")
    cli = "from reconciler.cli.startup import main; raise SystemExit(main())"
    result = run(python, "-c", cli, "--print-share-dir", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == (venv / "share" / "reconciler").resolve()
    result = run(python, "-c", cli, "--version", cwd=tmp_path)
    assert result.stdout == f"reconciler {PROJECT['version']}\n"


@builds
def test_sdist_leaves_the_tests_out_and_keeps_what_the_wheel_needs(built: Path) -> None:
    (sdist,) = built.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert not any(n.startswith(("tests/", "tests_host/")) for n in names)
    for needed in ("LICENSE", "hooks/nginx-reload", "systemd/reconciler.service", "pyproject.toml"):
        assert needed in names, needed


def test_the_version_is_written_in_one_place() -> None:
    """pyproject.toml's `version` is the one source: the command, the metrics and the wheel's
    name read it from the installed metadata, so a release edits one line."""
    from reconciler.version import version

    assert version() == PROJECT["version"]
    written = []
    for path in sorted((REPO / "reconciler").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.match(r"\s*(__version__|VERSION)\s*[:=]", line) or PROJECT["version"] in line:
                written.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not written, "\n".join(written)
