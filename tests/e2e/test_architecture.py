"""The package's shape: subsystems as packages, small public faces, layers, no import cycle.

ruff, mypy --strict and lint-imports (the layers between packages, the pure core, devpki kept out
of the runtime) run once, in `make lint`, which `make test` runs first. What they cannot say is
said here: every module sits in a layer, no import cycle exists at all (import-linter only sees
cycles between layers), a package is used only through its face, faces cost nothing to import,
and modules stay readable.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.imports import cycles, face_violations, imports, package_of
from tests.helpers.modules import layers, modules

PACKAGE = REPO / "reconciler"
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "errors.py", "version.py"}
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_top_level_holds_only_packages_main_errors_and_the_version() -> None:
    stray = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in TOP_LEVEL_MODULES)
    assert stray == [], f"move each into the subpackage of its subsystem: {stray}"


def test_every_module_is_in_one_layer_of_the_contract() -> None:
    """The layers contract checks only the packages it names: a new one must be placed."""
    placed = [name for layer in layers() for name in layer]
    assert len(placed) == len(set(placed)), "a package is in two layers"
    for module in modules():
        if module.name == "reconciler":
            continue  # the package itself: its version and the lazy faces' helper
        assert any(module.name == top or module.name.startswith(top + ".") for top in placed), (
            f"{module.path}: in no layer of pyproject.toml's layers contract"
        )


def test_no_import_cycle_between_modules_or_packages() -> None:
    """Lazy (function-level) and TYPE_CHECKING imports count: they still tie two modules."""
    found = imports(PACKAGE)
    assert cycles((i.importer, i.imported) for i in found) == []
    between = [
        (package_of(i.importer), package_of(i.imported))
        for i in found
        if package_of(i.importer) != package_of(i.imported)
    ]
    assert cycles(between) == []


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_cycle_check_finds_a_planted_lazy_or_type_checking_cycle(tmp_path: Path) -> None:
    package = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "a/__init__.py": "",
            "a/one.py": "def f():\n    from pkg.b.two import g\n",
            "b/__init__.py": "",
            "b/two.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.a import one\n",
            "b/three.py": "from . import two\n",
        },
    )
    found = imports(package)
    assert cycles((i.importer, i.imported) for i in found) == [["pkg.a.one", "pkg.b.two"]]
    assert cycles((i.importer, i.imported) for i in found if "three" in i.importer) == []


def test_packages_are_used_only_through_their_faces() -> None:
    assert face_violations(PACKAGE) == []


def test_the_face_check_finds_an_import_past_a_face(tmp_path: Path) -> None:
    package = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "a/__init__.py": '__all__ = ["public", "tools"]\n',
            "a/inner.py": "def public(): ...\ndef private(): ...\n",
            "a/tools.py": "",
            "b/__init__.py": "__all__ = []\n",
            "b/user.py": "from pkg.a import public\nfrom pkg.a import tools\n"
            "from pkg.a.inner import private\nfrom pkg.a import hidden\n",
        },
    )
    assert face_violations(package) == [
        "pkg.b.user:3: pkg.a.inner (not in its package's __all__)",
        "pkg.b.user:4: hidden from pkg.a",
    ]


@pytest.mark.parametrize("package", [p for p in SUBPACKAGES if p != "core"])
def test_a_face_says_what_it_owns_exports_what_it_lists_and_imports_nothing(package: str) -> None:
    init = PACKAGE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc.split()) >= 25, f"{init}: say in a paragraph what the package owns"
    code = (
        "import json, sys\n"
        f"import reconciler.{package} as face\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(face.__name__ + '.'))\n"
        "names = {n: type(getattr(face, n)).__name__ for n in face.__all__}\n"
        "print(json.dumps([loaded, names]))\n"
    )
    loaded, names = json.loads(_python(code))
    assert loaded == [], f"importing reconciler.{package} loads its modules: {loaded}"
    assert names, f"reconciler.{package} exports nothing"
    # Importing a submodule binds its name on the package: an exported function of the same
    # name would be replaced by the module once anything imports that module directly.
    submodules = {p.stem for p in (PACKAGE / package).glob("*.py")}
    clashes = {n for n, kind in names.items() if n in submodules and kind != "module"}
    assert not clashes, f"reconciler.{package} exports {clashes}, which are also module names"


def test_the_pure_core_loads_without_any_adapter() -> None:
    """Belt and braces: importing the core loads no adapter (the stdlib's socket may come in
    indirectly through pydantic, which is why the contract checks direct imports only)."""
    code = (
        "import sys\n"
        "import reconciler.core.evaluate, reconciler.core.plan, reconciler.core.render\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'watchdog','psutil','structlog','prometheus_client'} "
        "or (m.startswith('reconciler.') and m.split('.')[1] not in {'core', 'errors'}))\n"
        "print(','.join(bad))\n"
    )
    assert _python(code).strip() == ""


def test_validate_loads_only_what_checking_a_state_needs(tmp_path: Path) -> None:
    """`reconciler validate` (a GitOps repository's CI, every commit) starts fast: no settings
    framework, no daemon, no pass, no logging pipeline. Also when run by a hook (which is given
    RECONCILER_REVISION) or in CI (which sets RECONCILER_REQUIRE_*): those are no settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env |= {"RECONCILER_REVISION": "abc123", "RECONCILER_REQUIRE_NGINX": "1"}
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['reconciler', 'validate', {str(tmp_path)!r}]\n"
        "try:\n    runpy.run_module('reconciler', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    loaded = set(done.stderr.split("\n")[-2].split())
    heavy = {"pydantic_settings", "structlog", "watchdog", "psutil", "prometheus_client", "http"}
    assert not heavy & {m.split(".")[0] for m in loaded}, heavy & {m.split(".")[0] for m in loaded}
    ours = {".".join(m.split(".")[:2]) for m in loaded if m.startswith("reconciler.")}
    assert ours <= {
        "reconciler.__main__", "reconciler.cli", "reconciler.config", "reconciler.core",
        "reconciler.errors", "reconciler.source", "reconciler.support",
    }, ours  # fmt: skip


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
            assert size <= 220, f"{module.path}: class {name} is {size} lines"
