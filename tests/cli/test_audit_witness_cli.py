"""`audit head`, `audit verify --witness`, and the head that `apply`, `suspend` and `resume`
publish: the command line as an operator runs it, on logs real passes wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.helpers import REPO
from tests.helpers.cli import run_cli
from tests.helpers.sandbox import Sandbox

Cli = tuple[pytest.MonkeyPatch, pytest.CaptureFixture[str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return monkeypatch, capsys


def run(box: Sandbox, cli: Cli, *args: str) -> tuple[int, str, str]:
    return run_cli(box, cli[0], cli[1], *args)


def witness_to(path: Path, timeout_s: float = 5) -> str:
    return (
        f'[audit]\nwitness = ["/bin/sh", "-c", "cat >> {path}"]\nwitness_timeout_s = {timeout_s}\n'
    )


def last_record(box: Sandbox) -> dict[str, object]:
    record: dict[str, object] = json.loads((box.var / "audit.jsonl").read_text().splitlines()[-1])
    return record


def change_policy(box: Sandbox, policy: str) -> None:
    gateway = box.state.path / "gateway.toml"
    text = gateway.read_text()
    for old in ("modern", "intermediate", "old"):
        text = text.replace(f'tls_policy = "{old}"', f'tls_policy = "{policy}"')
    gateway.write_text(text)


def test_audit_head_prints_the_last_records_seq_and_hash(sandbox: Sandbox, cli: Cli) -> None:
    code, out, err = run(sandbox, cli, "audit", "head")
    assert (code, out) == (0, "")
    assert err == f"audit log {sandbox.var / 'audit.jsonl'}: no record yet\n"
    assert run(sandbox, cli, "apply")[0] == 0
    code, out, _ = run(sandbox, cli, "audit", "head")
    last = last_record(sandbox)
    assert (code, out) == (0, f"{last['seq']} {last['hash']}\n")
    # Rotated away, the current file not yet written: the head is the rotated file's last.
    (sandbox.var / "audit.jsonl").rename(sandbox.var / "audit.jsonl.1")
    assert run(sandbox, cli, "audit", "head")[1] == out


def test_apply_suspend_and_resume_hand_their_head_to_the_witness(
    sandbox: Sandbox, cli: Cli
) -> None:
    witnessed = sandbox.base / "heads.txt"
    sandbox.extra = witness_to(witnessed)
    code, _, err = run(sandbox, cli, "apply")
    assert code == 0, err
    head = run(sandbox, cli, "audit", "head")[1]
    assert witnessed.read_text() == head
    logged = [json.loads(line) for line in err.splitlines() if '"audit.head"' in line]
    assert [f"{e['seq']} {e['hash']}\n" for e in logged] == [head]
    # Nothing appended, nothing published.
    assert run(sandbox, cli, "apply")[0] == 0
    assert witnessed.read_text() == head
    run(sandbox, cli, "suspend", "--reason", "maintenance")
    run(sandbox, cli, "resume")
    heads = witnessed.read_text().splitlines(keepends=True)
    assert len(heads) == 3
    assert heads[-1] == run(sandbox, cli, "audit", "head")[1]
    code, out, err = run(sandbox, cli, "audit", "verify", "--witness", str(witnessed))
    assert code == 0, err
    assert out.splitlines()[-1] == f"witnessed heads ({witnessed}): 3 checked, 3 match"


BROKEN_WITNESSES = {
    "exits-non-zero": ("/bin/sh", "-c", "cat > /dev/null; exit 7"),
    "hangs": ("/bin/sh", "-c", "echo $$ > {pid}; exec sleep 300"),
    "is-missing": ("{base}/no-such-witness",),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_WITNESSES))
def test_a_broken_witness_changes_nothing_in_the_pass(
    sandbox: Sandbox, cli: Cli, tmp_path: Path, broken: str
) -> None:
    """The same pass with and without a witness that fails: same exit, targets and records."""
    reference = Sandbox(tmp_path / "reference", sandbox.state)
    for directory in (reference.root / "data", reference.root / "nginx", reference.trust_dir):
        directory.mkdir(parents=True)
    assert run(reference, cli, "apply")[0] == 0

    pid = sandbox.base / "witness.pid"
    argv = [part.format(pid=pid, base=sandbox.base) for part in BROKEN_WITNESSES[broken]]
    sandbox.extra = f"[audit]\nwitness = {json.dumps(argv)}\nwitness_timeout_s = 1\n"
    code, _, err = run(sandbox, cli, "apply")
    assert code == 0, err
    (finished,) = [json.loads(line) for line in err.splitlines() if "apply.finished" in line]
    assert finished["outcome"] == "converged"
    assert _targets(sandbox) == _targets(reference)
    events = [json.loads(line)["event"] for line in (sandbox.var / "audit.jsonl").open()]
    assert events == [json.loads(line)["event"] for line in (reference.var / "audit.jsonl").open()]
    failed = [json.loads(line) for line in err.splitlines() if "audit.witness_failed" in line]
    assert len(failed) == 1, err
    assert failed[0]["level"] == "warning"
    assert failed[0]["seq"] == last_record(sandbox)["seq"]
    if broken == "hangs":
        assert failed[0]["reason"] == "timed out after 1 s; its process group was killed"
        witness = int(pid.read_text())
        assert not psutil.pid_exists(witness) or psutil.Process(witness).status() == "zombie"


def _targets(box: Sandbox) -> dict[str, bytes]:
    """The targets, with the sandbox's own directory taken out of their content."""
    base = str(box.base).encode()
    return {name: data.replace(base, b"BASE") for name, data in box.targets().items()}


def _verify(sandbox: Sandbox, cli: Cli, *witness: str) -> tuple[int, str, str]:
    flags = [arg for source in witness for arg in ("--witness", source)]
    return run(sandbox, cli, "audit", "verify", *flags)


def test_verify_witness_names_the_failure_and_exits_1(sandbox: Sandbox, cli: Cli) -> None:
    witnessed = sandbox.base / "heads.txt"
    sandbox.extra = witness_to(witnessed)
    assert run(sandbox, cli, "apply")[0] == 0
    change_policy(sandbox, "modern")
    assert run(sandbox, cli, "apply")[0] == 0
    log = sandbox.var / "audit.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    first, second = (int(line.split()[0]) for line in witnessed.read_text().splitlines())
    log.write_text("".join(lines[: second - 1]))
    code, out, err = _verify(sandbox, cli, str(witnessed))
    assert code == 1
    assert (
        out
        == f"audit log intact: {second - 1} records in 1 file(s), from seq 1, the log's beginning\n"
    )
    assert err.splitlines() == [
        f"witnessed heads ({witnessed}): 2 checked, 1 match",
        f"audit log fails its witnesses: truncated: witnessed seq {second} ({witnessed} line 2), "
        f"log ends at {second - 1}",
    ]
    assert first < second


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "# the recipe selected nothing\n",
            "no SEQ HASH line, so nothing to check the log against",
        ),
        ("12 not-a-hash\n", "line 1: hash 'not-a-hash' is not 64 hex digits"),
    ],
    ids=["no-heads", "bad-line"],
)
def test_a_witness_file_that_proves_nothing_fails(
    sandbox: Sandbox, cli: Cli, content: str, message: str
) -> None:
    assert run(sandbox, cli, "apply")[0] == 0
    heads = sandbox.base / "heads.txt"
    heads.write_text(content)
    code, out, err = _verify(sandbox, cli, str(heads))
    assert code == 1
    assert out.startswith("audit log intact")
    assert message in err
    assert len(err.splitlines()) == 1


def test_verify_reads_heads_from_standard_input_and_several_sources(
    sandbox: Sandbox, cli: Cli
) -> None:
    assert run(sandbox, cli, "apply")[0] == 0
    head = run(sandbox, cli, "audit", "head")[1]
    extra = sandbox.base / "more.txt"
    extra.write_text(f"# from another witness\n{head}")
    env = {**os.environ, "RECONCILER_CONFIG": str(sandbox.config)}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "audit", "verify", "--witness", "-",
         "--witness", str(extra)],
        input=f"{head}{head}", capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"witnessed heads (standard input, {extra}): 1 checked, 1 match"
    )
