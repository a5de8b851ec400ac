"""`python -m bench --peer ansible`: the same changes made by Ansible, side by side with reconciler.

What an operator would otherwise run: an Ansible playbook (`connection: local`) that copies the
identity into ROOT, renders ssl.conf, smtp-inbound.json and server-profiles.json from templates
that give byte for byte the reconciler's files, copies every trust entry into the trust directory,
and notifies two handlers: `openssl rehash` after a trust change, and the same hook script the
reconciler runs. Per size (100 and 1,000 trust entries, a fifth as many profiles), both tools
take turns on the same desired state: a cold run (empty ROOT), then a run after one trust entry
changed. After the cold runs, the two ROOTs and trust directories must hold the same bytes and
links, or the comparison means nothing. Ansible needs many seconds per hundred entries: each run
is bounded by a timeout, and a run that overruns is reported as such. ansible-core is the `peer`
extra (`pip install -e '.[peer]'`); without `ansible-playbook` on the PATH the bench says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path, PurePosixPath

from bench.harness import PYTHON, TRASH, BenchError, Report, figure, progress, timed_run
from bench.pki import identities, trust_pems
from bench.scale import scale_state
from bench.workspace import HOOK_SCRIPT

RUN_TIMEOUT_S = 600.0
"""The most one Ansible run may take before it is reported as not finished."""


def available() -> str | None:
    """Why the peer bench cannot run here, or None."""
    if shutil.which("ansible-playbook") is None:
        return (
            "ansible-playbook is not installed: `pip install -e '.[peer]'` (ansible-core) "
            "into the venv, or put it on the PATH"
        )
    if shutil.which("openssl") is None:
        return "openssl is not installed (the playbook's rehash handler runs it)"
    return None


def peer(report: Report, sizes: list[int]) -> None:
    why = available()
    if why is not None:
        raise BenchError(why)
    pems = trust_pems(max(sizes) + 1)
    identity = identities(1)[0]
    for count in sizes:
        base = Path(tempfile.mkdtemp(prefix=f"reconciler-bench-peer{count}-"))
        try:
            _one_size(report, base, count, pems, identity.cert_pem, identity.key_pem)
        finally:
            TRASH.discard(base)


def _one_size(
    report: Report, base: Path, count: int, pems: list[bytes], cert: bytes, key: bytes
) -> None:
    state = base / "state"
    files = scale_state(count, pems, cert, key)
    for rel, data in files.items():
        (state / rel).parent.mkdir(parents=True, exist_ok=True)
        (state / rel).write_bytes(data)
    hook = base / "hook.sh"
    hook.write_text(HOOK_SCRIPT)
    hook.chmod(0o755)
    ours, theirs = _Side(base / "reconciler"), _Side(base / "ansible")
    config = _reconciler_config(base, state, ours, hook)
    reconciler = [PYTHON, "-m", "reconciler", "apply"]
    env = {**os.environ, "RECONCILER_CONFIG": str(config)}
    playbook = _playbook(base, state, theirs, hook, count)
    ansible = ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook)]
    ansible_env = {
        **os.environ,
        "ANSIBLE_NOCOWS": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
    }
    results: dict[str, dict[str, float | None]] = {"cold": {}, "one trust entry changed": {}}
    for scenario, timings in results.items():
        if scenario != "cold":
            (state / "trust" / "ca-00000.pem").write_bytes(pems[count])
        for tool, argv, run_env in (
            ("reconciler apply", reconciler, env),
            ("ansible-playbook", ansible, ansible_env),
        ):
            elapsed = _timed(argv, run_env)
            timings[tool] = elapsed
            shown = "did not finish" if elapsed is None else f"{elapsed:.2f} s"
            progress(f"peer {count}: {scenario}: {tool}: {shown}")
        if scenario == "cold":
            _same_targets(ours, theirs)
    for scenario, timings in results.items():
        ansible_s = timings["ansible-playbook"]
        ours_s = timings["reconciler apply"]
        if ours_s is None:
            raise BenchError(f"`reconciler apply` with {count} entries failed")
        note = (
            f"Ansible ran it in {ansible_s:.1f} s: {ansible_s / ours_s:.0f}x"
            if (ansible_s is not None)
            else f"Ansible did not finish within {RUN_TIMEOUT_S:g} s"
        )
        report.add(
            figure(
                "peer",
                f"{count} entries + {count // 5} profiles: {scenario}, reconciler apply",
                "s",
                [ours_s],
                baseline=[ansible_s] if ansible_s is not None else (),
                baseline_name="ansible-playbook, connection: local",
                note=note,
            )
        )


def _timed(argv: list[str], env: dict[str, str]) -> float | None:
    """Seconds one run took; None when it overran RUN_TIMEOUT_S or failed."""
    try:
        wall, _, code = timed_run(argv, env, timeout_s=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    return wall if code == 0 else None


class _Side:
    """One tool's ROOT, trust directory and hook log."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.trust = base / "trust"
        self.var = base / "var"
        self.hook_log = base / "hook.log"
        for directory in (self.root / "data", self.root / "nginx", self.trust):
            directory.mkdir(parents=True)


def _reconciler_config(base: Path, state: Path, side: _Side, hook: Path) -> Path:
    config = base / "reconciler.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            state_dir = "{state}"
            root = "{side.root}"
            var_dir = "{side.var}"
            trust_store = "directory"
            trust_dir = "{side.trust}"
            nginx_ssl_on = false
            log_format = "json"

            [[hooks]]
            name = "bench"
            on = ["identity", "console", "smtp_inbound", "trust", "profiles"]
            run = ["{hook}", "{side.hook_log}"]
            """
        )
    )
    return config


def _playbook(base: Path, state: Path, side: _Side, hook: Path, count: int) -> Path:
    """The playbook, its templates (the reconciler's renderings, ROOT as a variable) and vars."""
    from reconciler.core.render import render_ssl_conf

    root = str(side.root)
    conf = render_ssl_conf(
        "intermediate",
        cert_path=PurePosixPath(root) / "data" / "cert.pem",
        key_path=PurePosixPath(root) / "data" / "key.pem",
        ssl_on=False,
    ).decode()
    templates = base / "templates"
    templates.mkdir()
    (templates / "ssl.conf.j2").write_text(conf.replace(root, "{{ root }}"))
    for name in ("smtp_inbound", "server_profiles"):
        (templates / f"{name}.json.j2").write_text(f"{{{{ {name} | to_nice_json(indent=2) }}}}\n")
    variables = {
        "root": root,
        "state": str(state),
        "trust_dir": str(side.trust),
        "hook": str(hook),
        "hook_log": str(side.hook_log),
        "trust_entries": [f"ca-{number:05d}" for number in range(count)],
        "smtp_inbound": {
            "tls": "optional",
            "cert_file": f"{root}/data/cert.pem",
            "key_file": f"{root}/data/key.pem",
        },
        "server_profiles": {"profiles": [_profile(n) for n in range(count // 5)]},
    }
    data = "{{ root }}/data"

    def task(name: str, module: str, args: dict[str, object], **more: object) -> object:
        return {"name": name, f"ansible.builtin.{module}": args, "notify": "hook", **more}

    def template(name: str, dest: str) -> dict[str, object]:
        return {"src": str(templates / name), "dest": dest, "mode": "0644"}

    both = "{{ lookup('file', state + '/tls/key.pem', rstrip=False) }}" + (
        "{{ lookup('file', state + '/tls/cert.pem', rstrip=False) }}"
    )
    play = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        # Modules run by the Python that runs Ansible (not whatever `python3` the PATH finds).
        "vars": {**variables, "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [
            task("key", "copy", {"src": str(state / "tls/key.pem"), "dest": f"{data}/key.pem"}),
            task("cert", "copy", {"src": str(state / "tls/cert.pem"), "dest": f"{data}/cert.pem"}),
            task("bundle", "copy", {"content": both, "dest": f"{data}/tls.pem", "mode": "0600"}),
            task("console", "template", template("ssl.conf.j2", "{{ root }}/nginx/ssl.conf")),
            task(
                "inbound", "template", template("smtp_inbound.json.j2", f"{data}/smtp-inbound.json")
            ),
            task(
                "profiles",
                "template",
                template("server_profiles.json.j2", f"{data}/server-profiles.json"),
            ),
            {
                "name": "trust",
                "ansible.builtin.copy": {
                    "src": "{{ state }}/trust/{{ item }}.pem",
                    "dest": "{{ trust_dir }}/reconciler-{{ item }}.crt",
                    "mode": "0644",
                },
                "loop": "{{ trust_entries }}",
                "notify": ["rehash", "hook"],
            },
        ],
        "handlers": [
            {
                "name": "rehash",
                "ansible.builtin.command": {"argv": ["openssl", "rehash", "{{ trust_dir }}"]},
            },
            {"name": "hook", "ansible.builtin.command": {"argv": ["{{ hook }}", "{{ hook_log }}"]}},
        ],
    }
    playbook = base / "playbook.yml"
    playbook.write_text(json.dumps([play], indent=1))  # JSON is YAML
    return playbook


def _profile(number: int) -> dict[str, object]:
    """The entry the reconciler renders for `profile_toml(number)` (smtps, port 465)."""
    host = f"relay{number}.example.com"
    server = {"scheme": "smtps", "host": host, "port": 465, "path": "", "tls": "implicit"}
    return {
        "name": f"p{number:05d}",
        "kind": "smtp",
        "type": "smtp",
        "mode": "failover",
        **server,
        "servers": [server],
    }


def _same_targets(ours: _Side, theirs: _Side) -> None:
    """Both tools left the same bytes and links (each its own ROOT named where ROOT is named),
    or their timings compare nothing."""

    def tree(side: _Side) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        root = str(side.root).encode()
        for top, label in ((side.root, "ROOT"), (side.trust, "TRUST")):
            for path in sorted(top.rglob("*")):
                rel = f"{label}/{path.relative_to(top)}"
                if path.is_symlink():
                    found[rel] = b"-> " + os.readlink(path).encode()
                elif path.is_file():
                    found[rel] = path.read_bytes().replace(root, b"ROOT")
        return found

    mine, other = tree(ours), tree(theirs)
    if mine != other:
        differ = sorted(k for k in mine.keys() | other.keys() if mine.get(k) != other.get(k))
        raise BenchError(f"the two tools left different targets: {', '.join(differ[:5])}")
