"""The dependency lock agrees with pyproject.toml, and nothing machine-specific is tracked.

Everything that installs (make, .ci/run, the wheelhouse, install.sh, the image) installs from the
lock files, so a range edited in pyproject.toml without `make lock` would never be tested: these
tests fail until the lock is made again.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO
from tools.lock import DEV_LOCK, DIGEST_LINE, RUNTIME_LOCK, UV_LOCK, input_digest, normalise, pins

LOCKS = (DEV_LOCK, RUNTIME_LOCK, UV_LOCK)


def _requirements(*groups: str) -> list[Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    found: list[str] = []
    for group in groups:
        if group == "runtime":
            found += project["dependencies"]
        elif group == "build":
            found += data["build-system"]["requires"]
        else:
            found += project["optional-dependencies"][group]
    return [Requirement(text) for text in found]


@pytest.mark.parametrize("lock", LOCKS, ids=[lock.name for lock in LOCKS])
def test_each_lock_was_made_from_the_current_pyproject(lock: Path) -> None:
    first = lock.read_text().splitlines()[0]
    assert first.startswith(DIGEST_LINE), f"{lock.name}: no inputs digest; run `make lock`"
    assert first.removeprefix(DIGEST_LINE) == input_digest(), (
        f"{lock.name} was made from another pyproject.toml: run `make lock` (or "
        "`python tools/lock.py --keep` to keep the other pins) and commit the lock with it"
    )


@pytest.mark.parametrize(
    ("lock", "groups"),
    [(DEV_LOCK, ("runtime", "dev", "build")), (RUNTIME_LOCK, ("runtime",))],
    ids=["dev", "runtime"],
)
def test_every_declared_dependency_is_pinned_inside_its_range(
    lock: Path, groups: tuple[str, ...]
) -> None:
    pinned = pins(lock)
    for requirement in _requirements(*groups):
        name = normalise(requirement.name)
        assert name in pinned, f"{requirement} is not in {lock.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock.name} pins {name}=={pinned[name]}, outside pyproject.toml's {requirement}"
        )


def test_the_runtime_and_uv_locks_pin_what_the_dev_lock_tests() -> None:
    dev = pins(DEV_LOCK)
    for lock in (RUNTIME_LOCK, UV_LOCK):
        for name, version in pins(lock).items():
            assert dev.get(name) == version, f"{lock.name}: {name}=={version}, dev: {dev.get(name)}"


@pytest.mark.parametrize("lock", LOCKS, ids=[lock.name for lock in LOCKS])
def test_every_pin_carries_hashes(lock: Path) -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
    pinned = [block for block in blocks if re.match(r"[A-Za-z0-9][^\s]*==", block)]
    assert pinned, f"{lock.name} pins nothing"
    for block in pinned:
        assert "--hash=sha256:" in block, f"{lock.name}: no hash for {block.splitlines()[0]}"


def test_no_tracked_link_points_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-s", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    links = [entry.split("\t", 1)[1] for entry in listed.split("\0") if entry.startswith("120000")]
    repo = REPO.resolve()
    for link in links:
        target = os.readlink(REPO / link)
        resolved = ((REPO / link).parent / target).resolve()
        assert not os.path.isabs(target), f"{link} -> {target}: absolute, so machine-specific"
        assert resolved.is_relative_to(repo), f"{link} -> {target} leads out of the repository"
