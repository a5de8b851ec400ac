"""A clone of this project with the working tree's files committed: what users and tools install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.test",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.test",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
# A clone, an add or a commit of the whole project on a busy, shared machine.
GIT_TIMEOUT_S = 600


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env=env,
        check=check,
        timeout=GIT_TIMEOUT_S,
    )


def project_clone(dest: Path) -> str:
    """A clone of this project with the working tree's current files committed on top (what the
    tests must exercise is the code as it is now); returns the commit."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True, timeout=120)
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for rel in filter(None, listed.split("\0")):
        source = REPO / rel
        target = dest / rel
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif not source.exists() and target.exists():
            target.unlink()  # deleted in the working tree, not yet committed
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "--allow-empty", "-m", "working tree under test")
    return git(dest, "rev-parse", "HEAD").stdout.strip()
