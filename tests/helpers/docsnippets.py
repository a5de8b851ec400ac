"""The fenced blocks of README.md and docs/*.md, and a sandboxed host to run them in as written.

Every block has a language. What the docs test does with each:

    sh        run with `bash -e -o pipefail` in the sandbox; it must exit 0 (or `exit=N`)
    console   `$ COMMAND` lines, each followed by what it prints: run, and the output compared
              (times, digests, durations and column widths vary; a line `...` stands for any
              lines, and `...` inside a line for any text)
    toml      loaded as the file its first comment line names: settings by the settings
              loader, gateway.toml and profiles/NAME.toml by `reconciler validate` and the
              JSON Schema, anything else (another program's file) parsed
    python    run as a script (`args=...` gives it arguments)
    promql    parsed by promtool here; tests/e2e/test_fleet_bench.py runs it against real daemons
    yaml, json, ini   parsed (other programs' files: CI, Kubernetes, systemd); a json block with
              `file=PATH` must equal that file as the sandbox has it after the page's blocks
    text      not run: diagrams, layouts, synopses

An HTML comment on the line before a block changes that: `<!-- doc-test: skip REASON -->` (the
reason says where else it runs, or why it cannot run here), or options `setup=NAME[,NAME]`,
`cwd=PATH`, `exit=N`, `args=...`, `file=PATH`.

The sandbox is a host of its own, made with `unshare` (root only): a mount namespace whose /etc,
/opt, /srv, /var, /usr/local and /root are overlays on the real ones (writes land in the test's
directory), a fresh /run, its own PID namespace (whatever a block starts dies with it) and its
own network namespace (loopback only). A copy of the repository is the working directory, with
this checkout's venv; `reconciler` is on PATH. It has /etc/reconciler/reconciler.toml naming
/srv/gitops/gateway (the example desired state with a throwaway identity) and /opt/gateway,
applied once; a fleet repository at /srv/git/current (gateways mx1 and mx2).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import REPO

LANGUAGES = frozenset({"sh", "console", "toml", "python", "promql", "yaml", "json", "ini", "text"})
_FENCE = re.compile(r"^([ \t]*)```([^\n`]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)
_MARKER = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
OVERLAID = ("/etc", "/opt", "/srv", "/var", "/usr/local", "/root")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    language: str
    body: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def skipped(self) -> str | None:
        return self.options.get("skip")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _options(marker: str) -> dict[str, str]:
    if marker.startswith("skip"):
        return {"skip": marker.removeprefix("skip").strip()}
    found = {}
    for part in re.findall(r'(\w+)=("[^"]*"|\S+)', marker):
        found[part[0]] = part[1].strip('"')
    return found


def snippets(page: Path) -> list[Snippet]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text[: match.start()].count("\n") + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        language = match.group(2).strip().split(" ")[0]
        options = _options(marker.group(1)) if marker else {}
        body = textwrap.dedent(match.group(3)) if match.group(1) else match.group(3)
        found.append(Snippet(page, line, language, body, options))
    return found


# -- comparing what a console block shows with what the program printed ------------------------

_VARIABLE = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d\b"), "<date>"),
    (re.compile(r"\b[0-9a-f]{8,64}\b"), "<hex>"),
    (re.compile(r"\b\d+(\.\d+)? ?(ms|s)\b"), "<duration>"),
    (re.compile(r"\(\d+(\.\d+)? days\)"), "(<days> days)"),
]


def normalise(text: str) -> str:
    """What may differ between two runs made uniform: times, dates, digests, durations, spacing."""
    for pattern, replacement in _VARIABLE:
        text = pattern.sub(replacement, text)
    return "\n".join(" ".join(line.split()) for line in text.strip("\n").splitlines())


def matches(shown: str, printed: str) -> bool:
    """Whether `printed` is what `shown` shows: line `...` is any lines, inline `...` any text."""
    if not normalise(shown):
        return not normalise(printed)
    pattern = []
    for line in normalise(shown).splitlines():
        if line == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
            continue
        parts = [re.escape(p) for p in line.split("...")]
        pattern.append(".*?".join(parts) + r"\n")
    return re.fullmatch("".join(pattern), normalise(printed) + "\n", re.S) is not None


def console_steps(body: str) -> list[tuple[str, str]]:
    """(command, what it shows) of each `$ ` line of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return [(command, "\n".join(lines)) for command, lines in steps]


# -- the sandboxed host ------------------------------------------------------------------------


def sandbox_problem() -> str | None:
    """Why the sandbox cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "the docs' sandbox needs root (unshare, overlay mounts)"
    for tool in ("unshare", "mount", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    for name in (n for n in listed.decode().split("\0") if n):
        source = REPO / name
        if not source.is_file() and not source.is_symlink():
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination, follow_symlinks=False)
    (target / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**os.environ, "GIT_AUTHOR_NAME": "docs", "GIT_AUTHOR_EMAIL": "docs@example.org"}
    env |= {"GIT_COMMITTER_NAME": "docs", "GIT_COMMITTER_EMAIL": "docs@example.org"}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(["git", *argv], cwd=target, env=env, check=True, timeout=60)


SETUP_DIR = Path(__file__).with_name("docsetup")
#: Setups that start a process: run before every block that names them (a block's processes
#: end with it); the others change files only and run once per host.
PER_RUN = frozenset({"demo", "probe"})


class Host:
    """One page's sandboxed host: its file system changes persist from block to block."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.repo = base / "repo"
        _copy_repository(self.repo)
        self.done: set[str] = set()
        for directory in OVERLAID:
            name = directory.strip("/").replace("/", "-")
            (base / "upper" / name).mkdir(parents=True)
            (base / "work" / name).mkdir(parents=True)
        (base / "run").mkdir()

    def _mounts(self) -> str:
        lines = ["set -e"]
        for directory in OVERLAID:
            name = directory.strip("/").replace("/", "-")
            upper, work = self.base / "upper" / name, self.base / "work" / name
            lines.append(
                f"mount -t overlay overlay -o lowerdir={directory},upperdir={upper},"
                f"workdir={work} {directory}"
            )
        lines += [f"mount --bind {self.base / 'run'} /run", "ip link set lo up"]
        return "\n".join(lines)

    def run(
        self,
        script: str,
        *,
        cwd: str | None = None,
        setups: tuple[str, ...] = ("host",),
        args: str = "",
    ) -> subprocess.CompletedProcess[str]:
        """`script` (bash, with `args`) in the sandbox, after the setups it needs (each once per
        host but those that start processes)."""
        prelude = [self._mounts()]
        for name in setups:
            if name not in self.done:
                log = self.base / "setup.log"
                prelude.append(f"bash -e {SETUP_DIR / (name + '.sh')} >>{log} 2>&1")
                if name not in PER_RUN:
                    self.done.add(name)
        (self.base / "block.sh").write_text(script)
        inner = "\n".join(
            [
                *prelude,
                "set +e",
                f"cd {cwd or self.repo}",
                f"exec bash -e -o pipefail {self.base / 'block.sh'} {args}",
            ]
        )
        env = {
            "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "REPO": str(self.repo),
            "TERM": "dumb",
        }
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
             "--net", "bash", "-c", inner],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )  # fmt: skip
