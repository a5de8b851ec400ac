"""An intruder with write access to var_dir, attacking an audit log and covering it up.

Each attack works on a copy of a log that real passes wrote, and recomputes the chain the way the
documented formula says (written here again, not taken from the code), so that plain `audit
verify` passes; `audit verify --witness` must fail, naming the first witnessed seq that no longer
matches. `run_attacks` runs all of them against heads collected from one source.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO

ZERO = "0" * 64
Records = list[dict[str, object]]
#: A log's files, oldest first, each with its records.
Log = list[tuple[Path, Records]]


def chain_hash(prev_hash: str, record: dict[str, object]) -> str:
    """The documented chain rule, independent of the code under test."""
    without = {key: value for key, value in record.items() if key != "hash"}
    canonical = json.dumps(without, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def load(files: list[Path]) -> Log:
    return [
        (path, [json.loads(line) for line in path.read_text("utf-8").splitlines() if line])
        for path in files
    ]


def save(log: Log) -> None:
    for path, records in log:
        text = "".join(
            json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records
        )
        path.write_text(text, "utf-8")


def rechain(log: Log, *, renumber: bool = False) -> None:
    """Recompute every prev_hash and hash from the first record (and every seq, from 1)."""
    previous = ZERO
    seq = 0
    for _, records in log:
        for record in records:
            seq += 1
            if renumber:
                record["seq"] = seq
            record["prev_hash"] = previous
            record.pop("hash", None)
            record["hash"] = previous = chain_hash(previous, record)


def heads_in(path: Path) -> dict[int, str]:
    """The SEQ HASH lines of a witness file (the format `verify --witness` reads)."""
    found = {}
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            found[int(fields[0])] = fields[1]
    return found


@dataclass(frozen=True)
class Expected:
    """What `verify --witness` must name: the failure and the first witnessed seq it concerns."""

    kind: str
    seq: int

    def named_in(self, text: str) -> bool:
        name = f"record {self.seq} differs" if self.kind != "truncated" else f"seq {self.seq} "
        first = next((line for line in text.splitlines() if "fails its witnesses" in line), "")
        return f"{self.kind}: " in first and name in first


def _first_at_or_after(heads: dict[int, str], seq: int, end: int, kind: str) -> Expected:
    first = min(s for s in heads if s >= seq)
    return Expected(kind if first <= end else "truncated", first)


def cut_tail(log: Log, heads: dict[int, str]) -> Expected:
    """Cut the newest records, from two before the highest witnessed seq on."""
    end = max(heads) - 2
    for _, records in log:
        records[:] = [r for r in records if int(str(r["seq"])) <= end]
    return Expected("truncated", min(s for s in heads if s > end))


def rewrite_middle(log: Log, heads: dict[int, str]) -> Expected:
    """Change one record in the middle (a hook's exit code, or its time) and recompute every
    later hash."""
    ordered = sorted(heads)
    target = ordered[len(ordered) // 2] - 1
    for _, records in log:
        for record in records:
            if record["seq"] == target:
                record["ts"] = "2020-01-01T00:00:00.000000Z"
    rechain(log)
    last = max(int(str(r["seq"])) for _, records in log for r in records)
    return _first_at_or_after(heads, target, last, "rewritten")


def replace_whole(log: Log, heads: dict[int, str]) -> Expected:
    """Replace the log by a fresh, valid chain of as many records (one file)."""
    count = sum(len(records) for _, records in log)
    for path, _ in log[:-1]:
        path.unlink()
    fresh = [
        {
            "ts": f"2020-01-01T00:00:{n % 60:02d}.000000Z",
            "seq": n,
            "event": "warning",
            "revision": None,
            "prev_hash": "",
            "reason": "nothing happened",
        }
        for n in range(1, count + 1)
    ]
    log[:] = [(log[-1][0], fresh)]
    rechain(log)
    return Expected("rewritten", min(heads))


def delete_rotated(log: Log, heads: dict[int, str]) -> Expected:
    """Delete a rotated file (the middle one when there are two or more), renumber what follows
    and recompute the chain."""
    index = 1 if len(log) > 2 else 0
    path, removed = log.pop(index)
    path.unlink()
    rechain(log, renumber=True)
    last = sum(len(records) for _, records in log)
    return _first_at_or_after(heads, int(str(removed[0]["seq"])), last, "rewritten")


ATTACKS: dict[str, Callable[[Log, dict[int, str]], Expected]] = {
    "cut the last records": cut_tail,
    "rewrite a middle record": rewrite_middle,
    "replace the whole log": replace_whole,
    "delete a rotated file": delete_rotated,
}


def rotate(var: Path) -> None:
    """Rotate the log in `var` logrotate's way: audit.jsonl.1 becomes .2, audit.jsonl .1."""
    numbers = sorted((int(p.suffix[1:]) for p in var.glob("audit.jsonl.[0-9]*")), reverse=True)
    for number in numbers:
        (var / f"audit.jsonl.{number}").rename(var / f"audit.jsonl.{number + 1}")
    (var / "audit.jsonl").rename(var / "audit.jsonl.1")


def log_files(var: Path) -> list[Path]:
    """The log in `var` rotated that way, oldest first."""
    rotated = sorted(var.glob("audit.jsonl.[0-9]*"), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, var / "audit.jsonl"]


def copy_log(files: list[Path], into: Path) -> list[Path]:
    """The log's files copied into `into` under their names (the current file last)."""
    into.mkdir(parents=True)
    copies = []
    for path in files:
        shutil.copyfile(path, into / path.name)
        copies.append(into / path.name)
    return copies


def verify(audit_log: Path, *witness: Path) -> subprocess.CompletedProcess[str]:
    """`reconciler audit verify [--witness FILE]...` on the log at `audit_log`, in a child."""
    config = audit_log.parent / "verify.toml"
    config.write_text(f'var_dir = "{audit_log.parent}"\naudit_log = "{audit_log}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    flags = [arg for path in witness for arg in ("--witness", str(path))]
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "--config", str(config), "audit", "verify", *flags],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def run_attacks(files: list[Path], heads_file: Path, work: Path) -> dict[str, str]:
    """Every attack on a copy of the log `files` (oldest first, the current file last): plain
    verify passes on the covered-up copy, verify with `heads_file` fails naming the first
    witnessed seq that no longer matches. Returns what verify said, by attack.

    First the untouched copy must match its witnesses; and deleting the oldest rotated file
    without covering it up is retention: not checkable, no failure."""
    heads = heads_in(heads_file)
    assert len(heads) >= 3, f"too few witnessed heads to attack: {heads}"
    assert len(files) >= 3, "the log needs two rotated files"
    said = {}
    intact = copy_log(files, work / "intact")
    whole = verify(intact[-1], heads_file)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert f"{len(heads)} checked, {len(heads)} match" in whole.stdout, whole.stdout
    for name, attack in ATTACKS.items():
        copies = copy_log(files, work / re.sub(r"\W+", "-", name))
        log = load(copies)
        expected = attack(log, heads)
        save(log)
        plain = verify(copies[-1])
        assert plain.returncode == 0, f"{name}: plain verify: {plain.stdout}{plain.stderr}"
        witnessed = verify(copies[-1], heads_file)
        said[name] = witnessed.stdout + witnessed.stderr
        assert witnessed.returncode == 1, f"{name}: {said[name]}"
        assert expected.named_in(witnessed.stderr), f"{name}: want {expected}: {said[name]}"
    retained = copy_log(files, work / "retention")
    oldest = retained[0]
    gone = {int(json.loads(line)["seq"]) for line in oldest.read_text().splitlines()}
    oldest.unlink()
    kept = verify(retained[-1], heads_file)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    if gone & set(heads):
        assert f"{len(gone & set(heads))} not checkable" in kept.stdout, kept.stdout
    said["retention"] = kept.stdout
    return said
