"""The suite's own layout: test modules live in a layer and share code only through helpers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

TESTS = REPO / "tests"
#: One folder per package of the code (tests/PACKAGE/ tests reconciler/PACKAGE/), and e2e for
#: the command line, the daemon, the image and the shipped files run as users run them.
PACKAGES = tuple(
    sorted(p.name for p in (REPO / "reconciler").iterdir() if (p / "__init__.py").is_file())
)
LAYERS = (*PACKAGES, "e2e")

# A test module or a conftest, named absolutely (tests.e2e.test_cli) or from its package.
_FORBIDDEN = re.compile(r"(^|\.)(test_\w+|conftest)$")


def forbidden_imports(source: str) -> list[str]:
    """The imports in `source` that reach a test module or a conftest, as `line: module`.

    Relative imports count too: whatever they name sits next to a test module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.level:
                modules = [base or "."]
            else:
                modules = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for module in modules:
            if module.startswith(".") or (
                module.split(".")[0] == "tests" and _FORBIDDEN.search(module)
            ):
                found.append(f"{node.lineno}: {module}")
                break
    return found


def _suite_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "golden" not in path.parts)


def test_no_test_module_conftest_or_helper_imports_a_test_module_or_a_conftest() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{hit}"
        for path in _suite_files()
        for hit in forbidden_imports(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "share it through tests/helpers instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from tests.conftest import Sandbox\n", True),
        ("from tests.e2e.test_cli import run_cli\n", True),
        ("from tests import test_daemon\n", True),
        ("from tests.adapters import conftest\n", True),
        ("import tests.core.test_render\n", True),
        ("from .test_hooks import Recorder\n", True),
        ("from . import conftest\n", True),
        ("def f():\n    from tests.conftest import REPO\n", True),
        ("if TYPE_CHECKING:\n    from tests.e2e.conftest import x\n", True),
        ("from tests.helpers.sandbox import Sandbox\n", False),
        ("from tests.helpers import REPO\n", False),
        ("from reconciler.core import testing_utils\n", False),
        ("import pytest\nfrom bench.workspace import gateway_toml\n", False),
    ],
)
def test_the_import_check_catches_what_it_must(source: str, caught: bool) -> None:
    assert bool(forbidden_imports(source)) is caught


def test_every_test_module_lives_in_the_folder_of_its_package() -> None:
    misplaced = [
        path.relative_to(REPO).as_posix()
        for path in TESTS.rglob("test_*.py")
        if path.relative_to(TESTS).parts[0] not in LAYERS or len(path.relative_to(TESTS).parts) != 2
    ]
    assert not misplaced, f"move them to tests/{{{','.join(LAYERS)}}}/: {misplaced}"
    for layer in LAYERS:
        assert list((TESTS / layer).glob("test_*.py")), f"tests/{layer} holds no test module"


#: What only a test that runs processes, servers or a sandboxed install imports.
_WORLDLY = re.compile(
    r"^\s*(import subprocess|from subprocess|import socket|from tests\.helpers\.(nginx|sandbox|"
    r"daemon|net|hook_scripts) import|.*\bPopen\b)",
    re.MULTILINE,
)


def test_the_pure_cores_tests_run_no_process_and_no_server() -> None:
    """tests/core tests values: a test that needs openssl, nginx or a sandbox is an adapter's."""
    offenders = [
        f"{path.relative_to(REPO)}: {match.group(0).strip()}"
        for path in sorted((TESTS / "core").glob("*.py"))
        for match in _WORLDLY.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "move these to the package whose adapter they exercise:\n" + "\n".join(
        offenders
    )
