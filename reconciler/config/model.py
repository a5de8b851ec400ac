"""The settings model: every setting, its type, default and check (loaded by `config.load`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from reconciler.config import view
from reconciler.config.defaults import DEFAULT_STATE_DIR
from reconciler.config.view import TrustStoreName
from reconciler.core.desired import Kind


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HookSettings(_Section):
    """One `[[hooks]]` entry: a command run after a pass that changed any of its kinds."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    """Name shown in logs and the audit log."""
    on: Annotated[tuple[Kind, ...], Field(min_length=1)]
    """Resource kinds whose change triggers this hook."""
    check: tuple[str, ...] | None = None
    """Optional argv run first; a non-zero exit rolls back and `run` is not run."""
    run: Annotated[tuple[str, ...], Field(min_length=1)]
    """argv, no shell; a relative path (with a slash) is relative to the settings file."""
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """The whole process group is killed after this many seconds."""


class VerifySettings(_Section):
    """`[verify]`: what proves a pass worked after its hooks ran."""

    console: str | None = None
    """host:port where a TLS handshake must present the newly applied leaf."""
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0
    """How long verification retries before the pass is rolled back."""

    @field_validator("console")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, for example 127.0.0.1:8443")
        return value


class AuditSettings(_Section):
    """`[audit]`: where the audit log's head is published besides the log and the metrics."""

    witness: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    """argv that reads `SEQ HASH` on stdin after every pass that appended records, and at the
    daemon's start; no shell; a relative path (with a slash) is relative to the settings file."""
    witness_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    """The witness's whole process group is killed after this many seconds."""


class Settings(BaseSettings):
    """Every setting the daemon and commands read. Paths are absolute after loading."""

    model_config = SettingsConfigDict(
        env_prefix="RECONCILER_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    state_dir: Path = DEFAULT_STATE_DIR
    """The desired-state directory (a git checkout, git-sync link or ConfigMap volume)."""
    root: Path = Path("/opt/gateway")
    """The gateway's install base (ROOT): data/ and nginx/ live under it."""
    var_dir: Path = Path("/var/lib/reconciler")
    """Journal, staged files, previous generations, last-applied record and the lock."""
    audit_log: Path | None = None
    """The audit log (JSON Lines); default VAR_DIR/audit.jsonl."""
    trust_store: TrustStoreName = "debian"
    """Trust store backend: debian, rhel or directory."""
    trust_dir: Path | None = None
    """Directory of trust entries; default from the backend (required for `directory`)."""
    trust_refresh: tuple[str, ...] | None = None
    """argv that refreshes the OS store after a trust change; default from the backend (for
    `directory`, none: the reconciler makes the hash links itself)."""
    trust_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")] = "reconciler-"
    """Only files in TRUST_DIR with this prefix are managed."""
    key_dirs: tuple[Path, ...] = ()
    """Directories where an absolute identity key path may point (mounted secrets)."""
    key_mode: Literal["0600", "0640"] = "0600"
    """Mode of files holding the private key."""
    file_group: str | None = None
    """Group given to every target (name or numeric id); unset: unchanged."""
    nginx_ssl_on: bool | Literal["auto"] = "auto"
    """Write `ssl on;` into ssl.conf: auto detects from `nginx -v`."""
    quiet_period_ms: Annotated[int, Field(ge=0, le=600_000)] = 200
    """A pass starts once STATE has been quiet this long..."""
    max_wait_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 2000
    """...or at the latest this long after the first event."""
    resync_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    """A full pass at least this often, and the cap of the failure backoff."""
    log_format: Literal["json", "console"] | None = None
    """Operational log format; default console on a TTY, json otherwise."""
    metrics_address: str | None = None
    """HOST:PORT for /metrics, /healthz and /readyz; unset: off."""
    probe_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    """With metrics on, probe outbound TLS profiles this often; 0: off."""
    metrics_per_trust_entry: bool = False
    """Export an expiry series per trust entry (a fleet of thousands of entries: off)."""
    hooks: tuple[HookSettings, ...] = ()
    """Hooks run after a pass that changed files (host configuration, never desired state)."""
    verify: VerifySettings = VerifySettings()
    """Post-hook verification."""
    audit: AuditSettings = AuditSettings()
    """Publishing the audit log's head to a witness."""

    @field_validator("key_mode", mode="before")
    @classmethod
    def _mode_from_int(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return f"0{value:o}"
        if isinstance(value, str) and value.startswith("0o"):
            return "0" + value[2:]
        return value

    @field_validator("metrics_address")
    @classmethod
    def _metrics_host_port(cls, value: str | None) -> str | None:
        return VerifySettings._host_port(value)

    @model_validator(mode="after")
    def _trust_dir_known(self) -> Settings:
        if self.trust_store == "directory" and self.trust_dir is None:
            raise ValueError("trust_store = 'directory' needs trust_dir")
        return self

    # Derived values, so callers never repeat the defaulting rules.

    @property
    def audit_path(self) -> Path:
        return view.audit_path(self)

    @property
    def trust_path(self) -> Path:
        return view.trust_path(self)

    @property
    def trust_refresh_argv(self) -> tuple[str, ...]:
        """The refresh command; empty when the backend refreshes in process."""
        return view.trust_refresh_argv(self)

    @property
    def key_mode_bits(self) -> int:
        return int(self.key_mode, 8)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _CONFIG_FILE.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# The file chosen by build_settings(); pydantic-settings asks for sources through a classmethod.
_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def build_settings(path: Path | None, overrides: Mapping[str, Any]) -> Settings:
    """Settings from `overrides` > the environment > the TOML file at `path`, unchecked and
    relative; `reconciler.config.load.load_settings` is the loader to call."""
    _CONFIG_FILE["path"] = path
    try:
        return Settings(**overrides)
    finally:
        _CONFIG_FILE["path"] = None
