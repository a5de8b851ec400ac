"""Files made from one source stay in step with it, and work where they are used: bash, zsh and
fish complete from the parser's commands and flags, man renders the page, and the Kubernetes
PrometheusRule is deploy/prometheus's rules."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

COMPLETIONS = REPO / "completions"


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, capture_output=True, text=True, timeout=60, check=False, cwd=REPO, **kwargs
    )


def test_every_generated_file_matches_its_source() -> None:
    done = _run([sys.executable, "tools/generate.py", "--check"])
    assert done.returncode == 0, done.stderr


def test_the_check_names_a_file_that_drifted() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import generate
    finally:
        sys.path.remove(str(REPO / "tools"))
    page = REPO / "man" / "reconciler.1"
    original = page.read_text()
    try:
        page.write_text(original + ".SH EDITED BY HAND\n")
        assert generate.stale() == ["man/reconciler.1"]
    finally:
        page.write_text(original)
    assert generate.stale() == []


BASH_CASES = [
    ("reconciler au", ["audit"]),
    ("reconciler audit ", ["head", "show", "verify"]),
    ("reconciler validate --f", ["--format"]),
    ("reconciler validate --format ", ["text", "json", "github", "gitlab"]),
    ("reconciler audit show --kind t", ["trust"]),
    ("reconciler --config x.toml audit show --event pass.s", ["pass.started", "pass.succeeded"]),
    ("reconciler schema ", ["gateway", "profile"]),
    ("reconciler apply --d", ["--detailed-exitcode"]),
    ("reconciler plan --su", ["--summary"]),
    ("reconciler suspend --reason ", []),
]


@pytest.mark.parametrize(("line", "expected"), BASH_CASES, ids=[c[0] for c in BASH_CASES])
def test_bash_completes_commands_flags_and_values(line: str, expected: list[str]) -> None:
    words = line.split(" ")
    script = (
        f"source {COMPLETIONS / 'bash' / 'reconciler'}\n"
        "complete -p reconciler\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "COMP_LINE=" + repr(line) + "; _reconciler\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = _run(["bash", "--norc", "--noprofile", "-c", script])
    assert done.returncode == 0, done.stderr
    first, *replies = done.stdout.splitlines()
    assert first == "complete -F _reconciler reconciler"
    assert sorted(r for r in replies if r) == sorted(expected)


def test_bash_completes_file_names_for_the_settings_file() -> None:
    script = (
        f"source {COMPLETIONS / 'bash' / 'reconciler'}\n"
        "COMP_WORDS=(reconciler --config deploy/container/rec); COMP_CWORD=2; _reconciler\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = _run(["bash", "--norc", "--noprofile", "-c", script])
    assert done.stdout.split() == ["deploy/container/reconciler.toml"]


def _need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        pytest.skip(f"{program} is not installed here (.ci/run installs it)")
    return found


ZSH_STUBS = """
_describe() { [[ $1 == -t ]] && shift 2; print -rl -- "${(@P)2}" }
compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@" }
_files() { print -r -- "_files $*" }
_message() { print -r -- "_message $*" }
"""


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["audit", ""], ["show:the audit log, readable"]),
        (["--config", "x.toml", "sch"], ["schema:"]),
        (["plan", "--s"], ["--summary:count the changes by kind instead of listing them"]),
        (["audit", "show", "--kind", ""], ["identity", "trust"]),
        (["--state", ""], ["_files -/"]),
    ],
)
def test_zsh_completion_offers_the_parsers_words(words: list[str], expected: list[str]) -> None:
    """The completion function runs in a real zsh; the completion system's own presenters
    (_describe, compadd, _files) print what they are given instead of drawing a menu."""
    zsh = _need("zsh")
    quoted = " ".join(repr(w) for w in ["reconciler", *words])
    script = (
        f"{ZSH_STUBS}\nsource {COMPLETIONS / 'zsh' / '_reconciler'} >/dev/null\n"
        f"words=({quoted}); CURRENT={len(words) + 1}; _reconciler\n"
    )
    done = _run([zsh, "-f", "-c", script])
    assert done.returncode == 0, done.stderr
    offered = done.stdout.splitlines()
    for item in expected:
        assert any(line.startswith(item) for line in offered), (item, offered)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("reconciler au", {"audit"}),
        ("reconciler audit ", {"head", "show", "verify"}),
        (
            "reconciler audit show --kind ",
            {"identity", "console", "smtp_inbound", "trust", "profiles"},
        ),
        ("reconciler validate --format ", {"text", "json", "github", "gitlab"}),
        ("reconciler schema ", {"gateway", "profile"}),
    ],
)
def test_fish_completes_commands_and_values(line: str, expected: set[str]) -> None:
    fish = _need("fish")
    script = f"source {COMPLETIONS / 'fish' / 'reconciler.fish'}; complete -C {line!r}"
    done = _run([fish, "--no-config", "-c", script])
    assert done.returncode == 0, done.stderr
    offered = {line.split("\t")[0] for line in done.stdout.splitlines()}
    assert offered == expected


def test_the_manual_page_renders_every_command_without_warnings() -> None:
    groff = _need("groff")
    page = REPO / "man" / "reconciler.1"
    warnings = _run([groff, "-man", "-Tutf8", "-ww", "-z", str(page)])
    assert warnings.returncode == 0
    assert warnings.stderr == ""
    text = _run([groff, "-man", "-Tutf8", "-P", "-cbou", str(page)]).stdout
    for command in ("validate", "plan", "apply", "run", "status", "audit show", "schema"):
        assert f"\n   {command}" in text, command
    assert "--detailed-exitcode" in text
