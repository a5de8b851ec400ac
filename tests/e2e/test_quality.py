"""What the README's test command promises beyond tests: ruff, mypy --strict, import contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.modules import layers, modules

BIN = Path(sys.executable).parent
LINTED = ("reconciler", "tests", "tests_host", "bench", "hooks")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_check_passes() -> None:
    result = _run(str(BIN / "ruff"), "check", *LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run(str(BIN / "ruff"), "format", "--check", *LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_passes() -> None:
    result = _run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept() -> None:
    """The layers (command line > daemon > services > the pass > adapters > core) hold, and the
    core imports no subprocess, socket, watchdog, psutil or structlog."""
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_core_modules_really_load_without_adapters() -> None:
    """Belt and braces: importing the core loads no adapter (the stdlib's socket may come in
    indirectly through pydantic, which is why the contract checks direct imports only)."""
    code = (
        "import sys\n"
        "import reconciler.core.evaluate, reconciler.core.plan, reconciler.core.render\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'watchdog','psutil','structlog','prometheus_client'} "
        "or m in {'reconciler.snapshot','reconciler.transaction',"
        "'reconciler.hooks','reconciler.reconcile'})\n"
        "print(','.join(bad))\n"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_every_module_is_in_one_layer_of_the_contract() -> None:
    """The layers contract checks only the modules it names: a new module must be placed."""
    placed = [name for layer in layers() for name in layer]
    assert len(placed) == len(set(placed)), "a module is in two layers"
    for module in modules():
        if module.name == "reconciler":
            continue  # the package itself: its __init__ holds only the version
        assert any(module.name == top or module.name.startswith(top + ".") for top in placed), (
            f"{module.path}: in no layer of pyproject.toml's layers contract"
        )


def test_modules_have_a_role_and_stay_readable() -> None:
    """Each module opens with a one-line role; modules stay about 400 lines, classes about 200.

    The bounds carry a margin over those round figures; the rule registry is data.
    """
    for module in modules():
        assert module.role, f"{module.path}: no docstring saying what the module is for"
        if module.name != "reconciler.core.rules":
            assert module.lines <= 420, f"{module.path}: {module.lines} lines"
        if module.largest_class is not None:
            name, size = module.largest_class
            assert size <= 240, f"{module.path}: class {name} is {size} lines"
