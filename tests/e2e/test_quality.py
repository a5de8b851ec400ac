"""What the README's test command promises beyond tests: ruff, mypy --strict, import contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

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


def test_core_is_pure_by_import_contract() -> None:
    """reconciler.core imports no adapter, no subprocess, socket, watchdog, psutil or structlog."""
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


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
