"""The witness recipes exactly as docs/audit.md prints them, for the tests that run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

AUDIT_DOC = REPO / "docs" / "audit.md"


def recipe(language: str, marker: str) -> str:
    """The one fenced `language` block of docs/audit.md that contains `marker`."""
    text = AUDIT_DOC.read_text(encoding="utf-8")
    blocks = [b for b in re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL) if marker in b]
    assert len(blocks) == 1, f"docs/audit.md: {len(blocks)} {language} blocks hold {marker!r}"
    return str(blocks[0])


def replaced(text: str, values: dict[str, str]) -> str:
    """`text` with each documented example value (a key of `values`) replaced; each must be
    there: a test of a recipe must not silently test something else."""
    for example, value in values.items():
        assert example in text, f"the recipe no longer holds {example!r}:\n{text}"
        text = text.replace(example, value)
    return text


def run_recipe(
    script: str, cwd: Path, config: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A recipe's shell lines, as an operator runs them: bash, `reconciler` on PATH, the
    gateway's settings in RECONCILER_CONFIG (and `stdin`, for the rest of a pipeline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["RECONCILER_CONFIG"] = str(config)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
