"""`make lock`: resolve the newest versions pyproject.toml's ranges allow into the two lock files.

    requirements-dev.txt   everything `make test` installs: the runtime, the dev tools, the build
                           backend and uv itself, each pinned with the hashes of every file on PyPI
    requirements.txt       the runtime alone, at the same versions: the wheelhouse, install.sh,
                           the container image and the Debian package install from it
    requirements-uv.txt    uv alone, at the dev lock's version and hashes: `make` installs it with
                           pip, then lets it install the dev lock (seconds instead of half a minute)

uv resolves (fast, and universally: the pins carry markers, so the files hold on any Linux or
Python >= 3.11); pip installs (`pip install --require-hashes --no-deps -r ...`), so a machine with
only python3-venv can use the lock. Each file's header records a digest of the inputs it was made
from; tests/e2e/test_lock.py fails when pyproject.toml has changed since.

    python tools/lock.py            # re-resolve everything to the newest allowed versions
    python tools/lock.py --keep     # keep existing pins where they still fit (after a range edit)
    python tools/lock.py --digest   # print the digest of pyproject.toml's inputs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEV_LOCK = REPO / "requirements-dev.txt"
RUNTIME_LOCK = REPO / "requirements.txt"
UV_LOCK = REPO / "requirements-uv.txt"
PYTHON = "3.11"
DIGEST_LINE = "# inputs-sha256: "


def input_digest(pyproject: Path = REPO / "pyproject.toml") -> str:
    """The sha256 of what the lock is resolved from: requires-python, the build requirements,
    the dependencies and the dev extra, in a canonical JSON form (comments and order of other
    tables do not matter)."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    inputs = {
        "python": PYTHON,
        "requires-python": project.get("requires-python", ""),
        "build-system": sorted(data.get("build-system", {}).get("requires", [])),
        "dependencies": sorted(project.get("dependencies", [])),
        "dev": sorted(project.get("optional-dependencies", {}).get("dev", [])),
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock file (names normalised)."""
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            found[normalise(match.group(1))] = match.group(2)
    return found


def _block(lock: Path, name: str) -> str:
    """The lines of one package's pin in a lock file: `name==version` and its hash lines."""
    lines = lock.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}=="))
    end = start + 1
    while end < len(lines) and lines[end].startswith("    --hash="):
        end += 1
    return "".join(lines[start:end]).rstrip(" \\\n") + "\n"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _uv() -> str:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists():
        raise SystemExit("tools/lock.py: uv is not installed (it is in the dev extra: make test)")
    return uv


def _compile(args: list[str], output: Path, keep: bool) -> None:
    command = [
        _uv(), "pip", "compile", "--quiet", "--universal", "--python-version", PYTHON,
        "--generate-hashes", "--custom-compile-command", "make lock",
        "--output-file", str(output), *args,
    ]  # fmt: skip
    if not keep:
        command.append("--upgrade")
    subprocess.run(command, cwd=REPO, check=True)
    text = output.read_text()
    output.write_text(f"{DIGEST_LINE}{input_digest()}\n{text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep pins that still fit")
    parser.add_argument("--digest", action="store_true", help="print the inputs' digest")
    options = parser.parse_args()
    if options.digest:
        print(input_digest())
        return 0
    _compile(["pyproject.toml", "--extra", "dev"], DEV_LOCK, options.keep)
    # The runtime lock at exactly the dev lock's versions: what is tested is what ships.
    # (The constraints file has a fixed path under build/, so that the lock's "via" notes do
    # not change from one run to the next.)
    constraints = REPO / "build" / "lock-constraints.txt"
    constraints.parent.mkdir(exist_ok=True)
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins(DEV_LOCK).items()))
    _compile(
        ["pyproject.toml", "--constraint", str(constraints.relative_to(REPO))],
        RUNTIME_LOCK,
        keep=True,
    )
    UV_LOCK.write_text(
        f"{DIGEST_LINE}{input_digest()}\n# uv, as pinned in {DEV_LOCK.name}\n"
        + _block(DEV_LOCK, "uv")
    )
    print(
        f"wrote {DEV_LOCK.name} ({len(pins(DEV_LOCK))} pins), {RUNTIME_LOCK.name} "
        f"({len(pins(RUNTIME_LOCK))} pins); review with `git diff --stat -- requirements*.txt`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
