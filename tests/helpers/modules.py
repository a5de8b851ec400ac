"""The package's modules: their layers in the contract, roles, sizes and largest classes."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO


@dataclass(frozen=True)
class Module:
    """One module of the package: its dotted name, file, first docstring line and size."""

    name: str
    path: Path
    role: str
    lines: int
    largest_class: tuple[str, int] | None


def layers() -> list[list[str]]:
    """The import-linter layers contract in pyproject.toml, top first, as module name lists."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    contract = next(c for c in contracts if c["type"] == "layers")
    return [
        [part.strip() for part in layer.replace("|", ":").split(":") if part.strip()]
        for layer in contract["layers"]
    ]


def modules() -> list[Module]:
    """Every module of the package, in file order."""
    found = []
    for path in sorted((REPO / "reconciler").rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree) or ""
        classes = [
            (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
            for node in tree.body
            if isinstance(node, ast.ClassDef)
        ]
        found.append(
            Module(
                ".".join(parts),
                path,
                doc.splitlines()[0] if doc else "",
                len(path.read_text().splitlines()),
                max(classes, key=lambda c: c[1]) if classes else None,
            )
        )
    return found
