"""The project's own docs: self-contained, links that resolve, a short README, recipes that work."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import REPO

if TYPE_CHECKING:
    from tests.helpers.sandbox import Sandbox

DOCS = REPO / "docs"
README = REPO / "README.md"

#: Docs other branches of this round add. A link to one of them counts as resolved until they are
#: merged; then empty this list so that a link to a missing page fails again.
PENDING_DOCS: frozenset[str] = frozenset()

# Built here, not written out, so that this file does not match its own search.
_OUTSIDE = re.compile(re.escape("../" + "shared") + "|" + r"\b" + "SP" + r"EC\b")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", "demo"}


def _repository_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (a fresh clone's view), else a walk."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        files = [REPO / name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [
            path
            for path in REPO.rglob("*")
            if not _SKIPPED_DIRS.intersection(path.relative_to(REPO).parts)
        ]
    return [path for path in files if path.is_file() and not path.is_symlink()]


def _markdown_files() -> list[Path]:
    return [README, REPO / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]


def _links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks hold no links
    return _LINK.findall(text)


def _relative(target: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")


def test_nothing_in_the_repository_cites_a_document_outside_it() -> None:
    offenders = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files cite nothing
        for number, line in enumerate(text.splitlines(), start=1):
            if _OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_outside_citation_pattern_finds_what_it_must() -> None:
    """The scan above is only as good as its pattern: it must catch both forms, and words that
    merely contain the letters must pass."""
    assert _OUTSIDE.search("see " + "../" + "shared/notes.md")
    assert _OUTSIDE.search("(" + "SP" + "EC section 4)")
    assert not _OUTSIDE.search("INSPECTION of a spec file")


def test_every_relative_link_in_the_readme_changelog_and_docs_resolves() -> None:
    broken = []
    checked = 0
    for page in _markdown_files():
        for target in _links(page):
            if not _relative(target):
                continue
            checked += 1
            resolved = (page.parent / target.split("#", 1)[0]).resolve()
            try:
                name = resolved.relative_to(REPO).as_posix()
            except ValueError:
                broken.append(f"{page.relative_to(REPO)}: {target}: leaves the repository")
                continue
            if not resolved.exists() and name not in PENDING_DOCS:
                broken.append(f"{page.relative_to(REPO)}: {target}: no such file")
    assert not broken, "\n".join(broken)
    assert checked > 20, "the link pattern found almost nothing: is it still right?"


def test_the_docs_index_links_every_page_in_docs() -> None:
    linked = {
        (DOCS / target.split("#", 1)[0]).resolve()
        for target in _links(DOCS / "index.md")
        if _relative(target)
    }
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "index.md" and p not in linked]
    assert not missing, f"docs/index.md does not link {missing}"


def test_every_test_the_docs_name_exists() -> None:
    """docs/guarantees.md and the others name tests as proof: each file and function must exist.
    The changelog is history: it names files where they were at the time."""
    sources = {
        p.relative_to(REPO).as_posix(): p.read_text("utf-8") for p in REPO.glob("tests/**/*.py")
    }
    defined = {name for text in sources.values() for name in re.findall(r"def (test_\w+)", text)}
    missing = []
    named = 0
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for file, function in re.findall(r"(tests/[\w/]+\.py)(?:::(test_\w+))?", text):
            named += 1
            if file not in sources:
                missing.append(f"{page.name}: {file}")
            elif function and not re.search(rf"def {function}\(", sources[file]):
                missing.append(f"{page.name}: {file}::{function}")
        for function in re.findall(r"(?<![:\w])`(test_\w+)`", text):
            named += 1
            if function not in defined:
                missing.append(f"{page.name}: {function}")
    assert not missing, "\n".join(missing)
    assert named > 30


def test_the_readme_is_short_and_keeps_the_two_commands() -> None:
    size = README.stat().st_size
    assert size < 12 * 1024, f"README.md is {size} bytes; move detail into docs/"
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text
    assert "make test" in text


def _fenced(page: Path, language: str) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return [str(block) for block in re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)]


def _recipe(name: str, tmp_path: Path) -> list[str]:
    """One of the two standalone chain checkers of docs/audit.md, exactly as printed there."""
    page = DOCS / "audit.md"
    if name == "python":
        script = tmp_path / "verify_audit.py"
        script.write_text(_fenced(page, "python")[0])
        return [sys.executable, "-I", str(script)]
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed here (.ci/run installs it)")
    script = tmp_path / "verify-audit.sh"
    script.write_text(next(block for block in _fenced(page, "sh") if "sha256sum" in block))
    return ["bash", str(script)]


def _real_log(sandbox: Sandbox) -> tuple[Path, Path]:
    """A log that real passes wrote: hooks, a rejected state, a corrected hand edit, a rotation."""
    sandbox.hooks = (
        '[[hooks]]\nname = "announce"\non = ["identity", "console", "profiles"]\n'
        f'run = ["{REPO / "hooks" / "log-change.sh"}"]\n'
    )
    assert sandbox.run("apply").returncode == 0
    gateway = sandbox.state.path / "gateway.toml"
    gateway.write_text(gateway.read_text().replace('"intermediate"', '"modern"'))
    assert sandbox.run("apply").returncode == 0
    sandbox.state.profile("bad", 'url = "smtp://mx.example.org"\n')
    assert sandbox.run("apply").returncode == 1
    sandbox.state.remove("profiles/bad.toml")
    log = sandbox.var / "audit.jsonl"
    rotated = log.with_name("audit.jsonl.1")
    log.rename(rotated)  # logrotate's way
    (sandbox.root / "data" / "server-profiles.json").write_text('{"profiles": []}\n')
    assert sandbox.run("apply").returncode == 0
    written = rotated.read_text() + log.read_text()
    for event in ("change.applied", "hook.ran", "state.rejected", "drift.corrected"):
        assert f'"event":"{event}"' in written, event
    assert sandbox.run("audit", "verify").returncode == 0
    return rotated, log


@pytest.mark.parametrize("recipe", ["python", "jq"])
def test_the_audit_recipes_verify_a_real_log_and_catch_tampering(
    recipe: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The documented scripts accept a log real passes wrote, whole or with its older file
    deleted, and reject a copy with one field edited or one record removed."""
    argv = _recipe(recipe, tmp_path)
    rotated, log = _real_log(sandbox)

    def check(*files: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, *map(str, files)], capture_output=True, text=True, timeout=120, check=False
        )

    whole = check(rotated, log)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "chain starts at seq 1 (the log's beginning)\n" in whole.stdout
    assert "intact" in whole.stdout

    first_kept = json.loads(log.read_text().splitlines()[0])["seq"]
    assert first_kept > 1
    trimmed = check(log)
    assert trimmed.returncode == 0, trimmed.stdout + trimmed.stderr
    assert f"chain starts at seq {first_kept}\n" in trimmed.stdout

    text = rotated.read_text()
    assert '"action":"create"' in text
    edited = tmp_path / "edited.jsonl"
    edited.write_text(text.replace('"action":"create"', '"action":"update"', 1))
    tampered = check(edited, log)
    assert tampered.returncode == 1, tampered.stdout
    assert "hash mismatch: the record was edited" in tampered.stderr

    lines = text.splitlines(keepends=True)
    gap = tmp_path / "gap.jsonl"
    gap.write_text("".join(lines[:3] + lines[4:]))
    missing = check(gap, log)
    assert missing.returncode == 1, missing.stdout
    assert "does not follow seq 3" in missing.stderr


def test_the_architecture_page_names_every_package_once() -> None:
    """docs/architecture.md draws the packages and gives each a line: the code's packages."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## The packages", 1)[1].split("\n## ", 1)[0]
    described = re.findall(r"^- `([a-z]+)`:", section, re.M)
    packages = sorted(
        p.name for p in (REPO / "reconciler").iterdir() if (p / "__init__.py").exists()
    )
    assert sorted(described) == packages
    picture = section.split("```", 2)[1]
    assert all(name in picture for name in packages), "a package is missing from the picture"
