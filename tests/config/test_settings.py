"""Settings: defaults < TOML file < RECONCILER_* environment < flags; a bad one is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from reconciler.config.load import load_settings
from reconciler.config.model import Settings
from reconciler.errors import SettingsError
from tests.helpers import REPO
from tests.helpers.state import Pki, standard_state


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RECONCILER_* variable from the caller's shell leaks in; relative paths land in tmp."""
    for name in list(os.environ):
        if name.startswith("RECONCILER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _config(tmp_path: Path, text: str, name: str = "reconciler.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- sources and precedence ----------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings(None)
    assert settings.state_dir == Path("/etc/reconciler/desired-state")
    assert settings.root == Path("/opt/gateway")
    assert settings.var_dir == Path("/var/lib/reconciler")
    assert settings.audit_path == Path("/var/lib/reconciler/audit.jsonl")
    assert settings.trust_store == "debian"
    assert settings.trust_path == Path("/usr/local/share/ca-certificates")
    assert settings.trust_refresh_argv == ("update-ca-certificates",)
    assert settings.trust_prefix == "reconciler-"
    assert settings.key_dirs == ()
    assert settings.key_mode_bits == 0o600
    assert settings.file_group is None
    assert settings.nginx_ssl_on == "auto"
    assert (settings.quiet_period_ms, settings.max_wait_ms) == (200, 2000)
    assert settings.resync_interval_s == 300
    assert settings.metrics_address is None
    assert settings.hooks == ()
    assert settings.verify.console is None
    assert (settings.audit.witness, settings.audit.witness_timeout_s) == (None, 5.0)


def test_file_overrides_defaults(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        """\
        state_dir = "/srv/state"
        quiet_period_ms = 50
        trust_store = "rhel"
        key_dirs = ["/run/secrets/gateway"]

        [verify]
        console = "127.0.0.1:8443"
        timeout_s = 20
        """,
    )
    settings = load_settings(config)
    assert settings.state_dir == Path("/srv/state")
    assert settings.quiet_period_ms == 50
    assert settings.max_wait_ms == 2000  # untouched default
    assert settings.trust_path == Path("/etc/pki/ca-trust/source/anchors")
    assert settings.trust_refresh_argv == ("update-ca-trust", "extract")
    assert settings.key_dirs == (Path("/run/secrets/gateway"),)
    assert settings.verify.console == "127.0.0.1:8443"
    assert settings.verify.timeout_s == 20


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(
        tmp_path,
        """\
        state_dir = "/srv/state"
        quiet_period_ms = 50
        [verify]
        console = "127.0.0.1:8443"
        timeout_s = 20
        """,
    )
    monkeypatch.setenv("RECONCILER_QUIET_PERIOD_MS", "75")
    monkeypatch.setenv("RECONCILER_VERIFY__CONSOLE", "127.0.0.1:9443")
    monkeypatch.setenv("RECONCILER_KEY_DIRS", '["/run/a", "/run/b"]')
    monkeypatch.setenv("RECONCILER_NGINX_SSL_ON", "false")
    settings = load_settings(config)
    assert settings.state_dir == Path("/srv/state")  # from the file
    assert settings.quiet_period_ms == 75
    assert settings.verify.console == "127.0.0.1:9443"
    assert settings.verify.timeout_s == 20  # a nested variable overrides one key, not the table
    assert settings.key_dirs == (Path("/run/a"), Path("/run/b"))
    assert settings.nginx_ssl_on is False


def test_flags_override_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, 'state_dir = "/from/file"\nroot = "/root/from/file"\n')
    monkeypatch.setenv("RECONCILER_STATE_DIR", "/from/env")
    monkeypatch.setenv("RECONCILER_ROOT", "/root/from/env")
    settings = load_settings(config, state_dir=Path("/from/flag"), root=None)
    assert settings.state_dir == Path("/from/flag")
    assert settings.root == Path("/root/from/env")  # a flag left unset (None) does not override


def test_reconciler_config_picks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _config(tmp_path, 'root = "/chosen"\n', "etc/chosen.toml")
    monkeypatch.setenv("RECONCILER_CONFIG", str(chosen))
    assert load_settings(None).root == Path("/chosen")


def test_explicit_config_beats_reconciler_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_CONFIG", str(_config(tmp_path, 'root = "/env"\n', "env.toml")))
    explicit = _config(tmp_path, 'root = "/explicit"\n', "explicit.toml")
    assert load_settings(explicit).root == Path("/explicit")


def test_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=r"nope\.toml: not found"):
        load_settings(tmp_path / "nope.toml")
    monkeypatch.setenv("RECONCILER_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(SettingsError, match=r"gone\.toml: not found"):
        load_settings(None)


def test_relative_paths_become_absolute(tmp_path: Path) -> None:
    config = _config(tmp_path, 'var_dir = "var"\naudit_log = "log/audit.jsonl"\n')
    settings = load_settings(config, state_dir=Path("state"))
    for path in (settings.state_dir, settings.var_dir, settings.audit_path, settings.root):
        assert path.is_absolute()
    assert settings.audit_path == tmp_path / "log/audit.jsonl"


def test_audit_path_defaults_to_var_dir(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, f'var_dir = "{tmp_path}/var"\n'))
    assert settings.audit_log is None
    assert settings.audit_path == tmp_path / "var" / "audit.jsonl"
    explicit = load_settings(_config(tmp_path, 'audit_log = "/var/log/reconciler.jsonl"\n', "b"))
    assert explicit.audit_path == Path("/var/log/reconciler.jsonl")


# -- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "bits"),
    [
        ('key_mode = "0640"', 0o640),
        ('key_mode = "0600"', 0o600),
        ("key_mode = 0o640", 0o640),
        ("key_mode = 416", 0o640),
        ("key_mode = 0o600", 0o600),
        ('key_mode = "0o640"', 0o640),
    ],
    ids=["string-0640", "string-0600", "octal-0640", "decimal-416", "octal-0600", "string-0o640"],
)
def test_key_mode_accepts_0600_and_0640(tmp_path: Path, line: str, bits: int) -> None:
    assert load_settings(_config(tmp_path, line + "\n")).key_mode_bits == bits


@pytest.mark.parametrize(
    "line",
    [
        'key_mode = "0644"',
        "key_mode = 0o644",
        'key_mode = "0666"',
        "key_mode = 640",
        "key_mode = true",
    ],
    ids=["string-0644", "octal-0644", "world-writable", "decimal-640", "bool"],
)
def test_key_mode_rejects_anything_else(tmp_path: Path, line: str) -> None:
    with pytest.raises(SettingsError, match="key_mode") as caught:
        load_settings(_config(tmp_path, line + "\n"))
    assert "\n" not in str(caught.value)


def test_key_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_KEY_MODE", "0640")
    assert load_settings(None).key_mode_bits == 0o640


def test_trust_refresh_substitutes_trust_dir(tmp_path: Path) -> None:
    directory = load_settings(
        _config(tmp_path, f'trust_store = "directory"\ntrust_dir = "{tmp_path}/anchors"\n')
    )
    assert directory.trust_path == tmp_path / "anchors"
    assert directory.trust_refresh_argv == ()  # the links are made in process
    rehash = load_settings(
        _config(
            tmp_path,
            f'trust_store = "directory"\ntrust_dir = "{tmp_path}/anchors"\n'
            'trust_refresh = ["openssl", "rehash", "{trust_dir}"]\n',
        )
    )
    assert rehash.trust_refresh_argv == ("openssl", "rehash", f"{tmp_path}/anchors")

    custom = load_settings(
        _config(
            tmp_path,
            'trust_dir = "/srv/anchors"\n'
            'trust_refresh = ["/usr/local/bin/refresh", "--dir={trust_dir}", "{trust_dir}/x"]\n',
            "custom.toml",
        )
    )
    assert custom.trust_refresh_argv == (
        "/usr/local/bin/refresh",
        "--dir=/srv/anchors",
        "/srv/anchors/x",
    )


def test_hooks_relative_paths_resolve_next_to_the_settings_file(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        """\
        [[hooks]]
        name = "reload-console"
        on = ["identity", "console"]
        check = ["bin/check-console", "--strict"]
        run = ["./hooks/reload.sh", "now"]
        timeout_s = 5

        [[hooks]]
        name = "nginx"
        on = ["console"]
        run = ["nginx", "-s", "reload"]

        [[hooks]]
        name = "absolute"
        on = ["trust"]
        run = ["/usr/bin/true"]
        """,
        "etc/reconciler/reconciler.toml",
    )
    settings = load_settings(config)
    conf_dir = tmp_path / "etc/reconciler"
    first, second, third = settings.hooks
    assert first.run == (str(conf_dir / "hooks/reload.sh"), "now")
    assert first.check == (str(conf_dir / "bin/check-console"), "--strict")
    assert first.on == ("identity", "console")
    assert first.timeout_s == 5
    assert second.run == ("nginx", "-s", "reload")  # a bare name is looked up on PATH
    assert second.check is None
    assert second.timeout_s == 30
    assert third.run == ("/usr/bin/true",)


def test_hooks_resolve_next_to_the_file_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(
        tmp_path,
        '[[hooks]]\nname = "h"\non = ["trust"]\nrun = ["hooks/x.sh"]\n',
        "conf/r.toml",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("RECONCILER_CONFIG", "../conf/r.toml")
    assert load_settings(None).hooks[0].run == (str(tmp_path / "conf/hooks/x.sh"),)
    assert config.is_file()


def test_the_witness_command_resolves_like_a_hook_and_comes_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(
        tmp_path,
        '[audit]\nwitness = ["bin/witness", "--to", "store"]\nwitness_timeout_s = 2.5\n',
        "conf/r.toml",
    )
    settings = load_settings(config)
    assert settings.audit.witness == (str(tmp_path / "conf/bin/witness"), "--to", "store")
    assert settings.audit.witness_timeout_s == 2.5
    monkeypatch.setenv("RECONCILER_AUDIT__WITNESS", '["logger", "--tcp"]')
    monkeypatch.setenv("RECONCILER_AUDIT__WITNESS_TIMEOUT_S", "1")
    settings = load_settings(config)
    assert (settings.audit.witness, settings.audit.witness_timeout_s) == (("logger", "--tcp"), 1)


# -- bad settings: one line naming the setting -----------------------------------------------------


BAD: dict[str, tuple[str, str]] = {
    "unknown-key": ('trust_stor = "debian"\n', "trust_stor"),
    "unknown-nested-key": ('[verify]\nconsol = "127.0.0.1:1"\n', "verify.consol"),
    "wrong-type": ('quiet_period_ms = "fast"\n', "quiet_period_ms"),
    "negative": ("max_wait_ms = -1\n", "max_wait_ms"),
    "bad-key-mode": ('key_mode = "0644"\n', "key_mode"),
    "bad-trust-store": ('trust_store = "arch"\n', "trust_store"),
    "directory-without-trust-dir": ('trust_store = "directory"\n', "trust_dir"),
    "bad-metrics-address": ('metrics_address = "localhost"\n', "metrics_address"),
    "metrics-port-out-of-range": ('metrics_address = "127.0.0.1:70000"\n', "metrics_address"),
    "bad-verify-console": ('[verify]\nconsole = "nowhere"\n', "verify.console"),
    "bad-trust-prefix": ('trust_prefix = "../evil-"\n', "trust_prefix"),
    "bad-log-format": ('log_format = "xml"\n', "log_format"),
    "hook-bad-kind": ('[[hooks]]\nname = "h"\non = ["nginx"]\nrun = ["true"]\n', "hooks.0.on"),
    "hook-no-run": ('[[hooks]]\nname = "h"\non = ["trust"]\n', "hooks.0.run"),
    "hook-empty-run": ('[[hooks]]\nname = "h"\non = ["trust"]\nrun = []\n', "hooks.0.run"),
    "hook-unknown-key": (
        '[[hooks]]\nname = "h"\non = ["trust"]\nrun = ["true"]\nshell = true\n',
        "hooks.0.shell",
    ),
    "witness-empty": ("[audit]\nwitness = []\n", "audit.witness"),
    "witness-a-string": ('[audit]\nwitness = "logger"\n', "audit.witness"),
    "witness-timeout-zero": ("[audit]\nwitness_timeout_s = 0\n", "audit.witness_timeout_s"),
    "witness-timeout-long": ("[audit]\nwitness_timeout_s = 61\n", "audit.witness_timeout_s"),
    "audit-unknown-key": ('[audit]\nwitnes = ["logger"]\n', "audit.witnes"),
    "toml-syntax": ("root = \n", "line 1"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=sorted(BAD))
def test_bad_setting_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    text, name = BAD[case]
    config = _config(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "\n" not in message
    assert name in message
    assert str(config) in message


def test_bad_environment_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_QUIET_PERIOD_MS", "soon")
    with pytest.raises(SettingsError, match="quiet_period_ms") as caught:
        load_settings(None)
    assert "\n" not in str(caught.value)


def test_bad_environment_value_is_not_blamed_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, "quiet_period_ms = 100\n")
    monkeypatch.setenv("RECONCILER_KEY_MODE", "0644")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert "RECONCILER_KEY_MODE" in str(caught.value)


def test_several_bad_settings_are_all_named_on_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path, 'key_mode = "0644"\nquiet_period_ms = "x"\ntypo = 1\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "\n" not in message
    for name in ("key_mode", "quiet_period_ms", "typo"):
        assert name in message


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", ["unknown-key", "bad-key-mode", "directory-without-trust-dir"])
def test_cli_bad_setting_exits_1_with_one_line(tmp_path: Path, case: str) -> None:
    text, name = BAD[case]
    config = _config(tmp_path, text, "bad.toml")
    done = _cli("--config", str(config), "validate", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert name in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_cli_flags_override_the_file(tmp_path: Path, pki: Pki) -> None:
    state = standard_state(tmp_path / "state", pki)
    config = _config(tmp_path, f'state_dir = "{tmp_path}/missing"\n', "good.toml")
    assert _cli("--config", str(config), "validate", cwd=tmp_path).returncode == 1
    done = _cli("validate", "--config", str(config), "--state", str(state.path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(None)
    assert isinstance(settings, Settings)
    with pytest.raises(ValueError, match="frozen"):
        settings.root = Path("/elsewhere")  # type: ignore[misc]


# -- `validate`'s two settings without pydantic-settings: the same answer as load_settings --------


@pytest.fixture
def default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/etc/reconciler/reconciler.toml, moved where a test may create it; absent at first."""
    from reconciler.config import load as settingsload

    path = tmp_path / "etc-reconciler" / "reconciler.toml"
    monkeypatch.setattr(settingsload, "DEFAULT_CONFIG", path)
    return path


def _both(state: Path | None, config: Path | None = None) -> tuple[object, object]:
    """(quick path, load_settings) for state_dir and key_dirs; an exception stands for itself."""
    from reconciler.config.load import quick_state_paths

    quick = quick_state_paths(config, state)
    try:
        full = load_settings(config, state_dir=state)
    except SettingsError as exc:
        return quick, exc
    return quick, (full.state_dir, full.key_dirs)


STATE_VARIABLE = {"unset": None, "absolute": "/env/state", "relative": "env/state", "empty": ""}
KEY_DIRS_VARIABLE = {
    "unset": None,
    "two": '["/run/a", "rel/b"]',
    "none": "[]",
    "spaced": ' [ "/run/c" ] ',
    "not-json": "/run/a,/run/b",
    "json-string": '"/run/a"',
    "json-number": "[1]",
    "empty-entry": '[""]',
}
# Where the quick path must answer (the others it may leave to load_settings).
_QUICK_ANSWERS = {"unset", "absolute", "relative", "empty", "two", "none", "spaced", "empty-entry"}


@pytest.mark.parametrize("flag", [None, "/flag/state", "flag/state"], ids=["no-flag", "abs", "rel"])
@pytest.mark.parametrize("state_var", sorted(STATE_VARIABLE), ids=sorted(STATE_VARIABLE))
@pytest.mark.parametrize("keys_var", sorted(KEY_DIRS_VARIABLE), ids=sorted(KEY_DIRS_VARIABLE))
def test_quick_state_paths_equal_load_settings(
    monkeypatch: pytest.MonkeyPatch,
    default_config: Path,
    flag: str | None,
    state_var: str,
    keys_var: str,
) -> None:
    """Flag > environment > default, relative paths made absolute: as load_settings, or None."""
    for name, value in (
        ("RECONCILER_STATE_DIR", STATE_VARIABLE[state_var]),
        ("RECONCILER_KEY_DIRS", KEY_DIRS_VARIABLE[keys_var]),
    ):
        if value is not None:
            monkeypatch.setenv(name, value)
    quick, full = _both(Path(flag) if flag is not None else None)
    if quick is not None:
        assert quick == full
    if keys_var in _QUICK_ANSWERS and (state_var in _QUICK_ANSWERS or flag is not None):
        assert quick is not None


def test_quick_state_paths_defaults(default_config: Path) -> None:
    quick, full = _both(None)
    assert quick == full == (Path("/etc/reconciler/desired-state"), ())


@pytest.mark.parametrize("how", ["flag", "variable", "default-file"])
def test_a_settings_file_in_force_is_left_to_load_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_config: Path, how: str
) -> None:
    """With a file there is more to check (a bad setting fails even `validate`): no quick path."""
    from reconciler.config.load import quick_state_paths

    text = 'state_dir = "/from/file"\nkey_dirs = ["/run/file"]\n'
    explicit = None
    if how == "flag":
        explicit = _config(tmp_path, text)
    elif how == "variable":
        monkeypatch.setenv("RECONCILER_CONFIG", str(_config(tmp_path, text)))
    else:
        _config(default_config.parent, text, default_config.name)
    assert quick_state_paths(explicit, None) is None
    assert quick_state_paths(explicit, Path("/flag")) is None
    assert load_settings(explicit).state_dir == Path("/from/file")


@pytest.mark.parametrize(
    "name",
    ["RECONCILER_ROOT", "RECONCILER_QUIET_PERIOD_MS", "reconciler_state_dir", "RECONCILER_X__Y"],
)
def test_any_other_variable_is_left_to_load_settings(
    monkeypatch: pytest.MonkeyPatch, default_config: Path, name: str
) -> None:
    """Another setting may be bad, and names match case-insensitively: pydantic-settings decides."""
    from reconciler.config.load import quick_state_paths

    monkeypatch.setenv(name, "soon")
    assert quick_state_paths(None, None) is None
    assert quick_state_paths(None, Path("/flag")) is None


@pytest.mark.parametrize(
    "name", ["RECONCILER_REVISION", "RECONCILER_REQUIRE_NGINX", "RECONCILER_TEST_FAULT"]
)
def test_variables_that_are_not_settings_keep_the_quick_path(
    monkeypatch: pytest.MonkeyPatch, default_config: Path, name: str
) -> None:
    """A hook's RECONCILER_REVISION, or CI's RECONCILER_REQUIRE_*, are no settings: `validate`
    still answers without loading the settings model, and with what load_settings gives."""
    monkeypatch.setenv(name, "1")
    quick, full = _both(None)
    assert quick is not None
    assert quick == full


_ENV_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30
)


@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    state=st.one_of(st.none(), _ENV_TEXT),
    keys=st.one_of(
        st.none(),
        _ENV_TEXT,
        st.lists(_ENV_TEXT, max_size=3).map(json.dumps),
    ),
    flag=st.one_of(st.none(), _ENV_TEXT.filter(bool).map(Path)),
)
def test_quick_state_paths_never_disagree_with_load_settings(
    default_config: Path, state: str | None, keys: str | None, flag: Path | None
) -> None:
    """Any variable values: the quick path answers as load_settings does, or not at all."""
    env = {"RECONCILER_STATE_DIR": state, "RECONCILER_KEY_DIRS": keys}
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if v is not None}):
        quick, full = _both(flag)
    if quick is not None:
        assert quick == full


def test_validate_without_settings_does_not_import_pydantic_settings(
    tmp_path: Path, pki: Pki
) -> None:
    """The CI case: --state only. The same verdict, without paying for pydantic-settings."""
    state = standard_state(tmp_path / "state", pki)
    probe = (
        "import sys\n"
        "from reconciler.cli.startup import main\n"
        "code = main(sys.argv[1:])\n"
        "print('pydantic_settings' in sys.modules, code)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", probe, "validate", "--state", str(state.path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.stdout.splitlines()[-1] == "False 0", done.stderr
    assert f"{state.path}: valid, revision sha256:" in done.stdout
    env["RECONCILER_ROOT"] = str(tmp_path / "root")  # another setting: the full load
    done = subprocess.run(
        [sys.executable, "-c", probe, "validate", "--state", str(state.path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.stdout.splitlines()[-1] == "True 0", done.stderr


def _as_plain(settings: object) -> dict[str, object]:
    """Every setting and derived value, whichever implementation holds them."""
    names = [name for name in Settings.model_fields if name not in ("hooks", "verify", "audit")]
    found: dict[str, object] = {name: getattr(settings, name) for name in names}
    for derived in ("audit_path", "trust_path", "trust_refresh_argv", "key_mode_bits"):
        found[derived] = getattr(settings, derived)
    hooks = getattr(settings, "hooks")  # noqa: B009 - either implementation
    found["hooks"] = [(h.name, h.on, h.check, h.run, h.timeout_s) for h in hooks]
    verify = getattr(settings, "verify")  # noqa: B009 - either implementation
    found["verify"] = (verify.console, verify.timeout_s)
    audit = getattr(settings, "audit")  # noqa: B009 - either implementation
    found["audit"] = (audit.witness, audit.witness_timeout_s)
    return found


def test_settings_checked_apart_are_the_settings_loaded_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon has its settings checked in a child process: the same values from a file,
    the environment and flags, relative paths and hook commands resolved the same way."""
    from reconciler.config.apart import load_settings_apart

    config = _config(
        tmp_path / "etc",
        """\
        state_dir = "state"
        trust_store = "directory"
        trust_dir = "trust"
        trust_refresh = ["openssl", "rehash", "{trust_dir}"]
        key_dirs = ["secrets"]
        key_mode = "0640"
        nginx_ssl_on = true
        metrics_address = "127.0.0.1:9100"

        [[hooks]]
        name = "reload"
        on = ["identity", "console"]
        check = ["./check.sh"]
        run = ["/usr/sbin/nginx", "-s", "reload"]
        timeout_s = 7.5

        [verify]
        console = "127.0.0.1:8443"

        [audit]
        witness = ["./witness.sh", "--to", "heads"]
        witness_timeout_s = 2.5
        """,
    )
    monkeypatch.setenv("RECONCILER_QUIET_PERIOD_MS", "150")
    monkeypatch.setenv("RECONCILER_VERIFY__TIMEOUT_S", "3")
    here = load_settings(config, root=Path("root"))
    apart = load_settings_apart(config, root=Path("root"))
    assert _as_plain(apart) == _as_plain(here)
    assert apart.hooks[0].check == (str(tmp_path / "etc" / "check.sh"),)
    assert apart.quiet_period_ms == 150
    assert apart.audit.witness == (str(tmp_path / "etc" / "witness.sh"), "--to", "heads")


def test_a_bad_setting_checked_apart_is_the_same_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.config.apart import load_settings_apart

    config = _config(tmp_path, 'quiet_period_ms = "soon"\ntrust_prefix = "a/b"\n')
    with pytest.raises(SettingsError) as here:
        load_settings(config)
    with pytest.raises(SettingsError) as apart:
        load_settings_apart(config)
    assert str(apart.value) == str(here.value)
    monkeypatch.setenv("RECONCILER_VERIFY_CONSOLE", "x:1")  # a misspelt variable
    with pytest.raises(SettingsError, match="unknown setting variable RECONCILER_VERIFY_CONSOLE"):
        load_settings_apart(None)
