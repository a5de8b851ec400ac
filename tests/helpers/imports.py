"""The package's import graph as the source writes it: every import, wherever it stands.

import-linter checks layers between packages; it cannot say "no cycle at all" or "only through a
package's face". This reads every `import` and `from ... import` of a package's modules, at module
level, inside functions and under `TYPE_CHECKING` alike (a lazy import still ties two modules
together), and answers those two questions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    """One import of a module of the package by another: where it stands and what it names."""

    importer: str
    imported: str
    names: tuple[str, ...]
    line: int


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under `package_dir` (the directory of the package)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        found[".".join(parts)] = path
    return found


def imports(package_dir: Path) -> list[Import]:
    """Every import of one of the package's modules by another of them."""
    names = module_names(package_dir)
    top = package_dir.name
    found = []
    for importer, path in names.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == top:
                        found.append(Import(importer, _known(alias.name, names), (), node.lineno))
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, importer, is_package)
                if module.split(".")[0] != top:
                    continue
                submodules = [a.name for a in node.names if f"{module}.{a.name}" in names]
                others = tuple(a.name for a in node.names if a.name not in submodules)
                if others or not submodules:
                    found.append(Import(importer, _known(module, names), others, node.lineno))
                for name in submodules:
                    found.append(Import(importer, f"{module}.{name}", (), node.lineno))
    return [i for i in found if i.imported != i.importer]


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _known(name: str, names: Mapping[str, Path]) -> str:
    """The longest prefix of `name` that is a module of the package."""
    parts = name.split(".")
    while parts and ".".join(parts) not in names:
        parts.pop()
    return ".".join(parts) or name


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def package_of(module: str, depth: int = 2) -> str:
    """`reconciler.source.fleet` -> `reconciler.source` (a top-level module stays itself)."""
    return ".".join(module.split(".")[:depth])


def face_violations(package_dir: Path) -> list[str]:
    """Imports that reach into another subpackage past its face, as `importer:line: what`.

    Outside its subpackage, a module may import from the subpackage itself (the names its
    `__init__` exports in `__all__`) or a submodule that `__all__` lists as public. The pure core
    is exempt: each of its modules is public."""
    names = module_names(package_dir)
    exported = {name: _all_of(path) for name, path in names.items() if path.name == "__init__.py"}
    found = []
    for i in imports(package_dir):
        target_package = package_of(i.imported)
        if target_package.count(".") != 1 or target_package not in exported:
            continue  # the top-level package, or a top-level module
        if target_package.endswith(".core"):
            continue
        if package_of(i.importer) == target_package:
            continue
        public = exported[target_package]
        if i.imported == target_package:
            hidden = [n for n in i.names if n not in public]
            if hidden:
                found.append(f"{i.importer}:{i.line}: {', '.join(hidden)} from {i.imported}")
        elif i.imported.rsplit(".", 1)[1] not in public:
            found.append(f"{i.importer}:{i.line}: {i.imported} (not in its package's __all__)")
    return found


def _all_of(init: Path) -> frozenset[str]:
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                value = ast.literal_eval(node.value) if node.value else []
                return frozenset(value)
    return frozenset()
