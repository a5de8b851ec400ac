"""What the code's shape promises: the core loads alone, every module sits in a layer, modules stay
readable. (ruff, mypy --strict and lint-imports run once, in `make lint`, which `make test` runs
first; not again here.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO
from tests.helpers.modules import layers, modules

BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


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
