"""What the rest of the program reads of the settings, and a plain value that holds them.

`Settings`, `HookSettings` and `VerifySettings` are the settings as every consumer sees them:
read-only attributes. The pydantic-settings model (`config.model`) is one implementation; the
frozen `SettingsValues` is the other, for a process that must not keep pydantic-settings loaded:
the daemon has its settings validated by the model in a child process (`config.apart`) and holds
the result here, which costs next to nothing. Importing this module loads no pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

from reconciler.core.desired import Kind

__all__ = [
    "TRUST_BACKENDS",
    "AuditSettings",
    "AuditValues",
    "HookSettings",
    "HookValues",
    "Settings",
    "SettingsValues",
    "VerifySettings",
    "VerifyValues",
]

TrustStoreName = Literal["debian", "rhel", "directory"]

#: Per backend: the trust directory and the command that refreshes the OS store from it (none:
#: the reconciler makes the directory's hash links itself, as `openssl rehash` would).
TRUST_BACKENDS: dict[str, tuple[Path | None, tuple[str, ...]]] = {
    "debian": (Path("/usr/local/share/ca-certificates"), ("update-ca-certificates",)),
    "rhel": (Path("/etc/pki/ca-trust/source/anchors"), ("update-ca-trust", "extract")),
    "directory": (None, ()),
}


class HookSettings(Protocol):
    """One `[[hooks]]` entry (see config.model.HookSettings for what each field means)."""

    @property
    def name(self) -> str: ...
    @property
    def on(self) -> tuple[Kind, ...]: ...
    @property
    def check(self) -> tuple[str, ...] | None: ...
    @property
    def run(self) -> tuple[str, ...]: ...
    @property
    def timeout_s(self) -> float: ...


class VerifySettings(Protocol):
    """`[verify]` (see config.model.VerifySettings)."""

    @property
    def console(self) -> str | None: ...
    @property
    def timeout_s(self) -> float: ...


class AuditSettings(Protocol):
    """`[audit]` (see config.model.AuditSettings)."""

    @property
    def witness(self) -> tuple[str, ...] | None: ...
    @property
    def witness_timeout_s(self) -> float: ...


class Settings(Protocol):
    """Every setting, as the program reads it (see config.model.Settings for their meaning)."""

    @property
    def state_dir(self) -> Path: ...
    @property
    def root(self) -> Path: ...
    @property
    def var_dir(self) -> Path: ...
    @property
    def audit_log(self) -> Path | None: ...
    @property
    def trust_store(self) -> TrustStoreName: ...
    @property
    def trust_dir(self) -> Path | None: ...
    @property
    def trust_refresh(self) -> tuple[str, ...] | None: ...
    @property
    def trust_prefix(self) -> str: ...
    @property
    def key_dirs(self) -> tuple[Path, ...]: ...
    @property
    def key_mode(self) -> Literal["0600", "0640"]: ...
    @property
    def file_group(self) -> str | None: ...
    @property
    def nginx_ssl_on(self) -> bool | Literal["auto"]: ...
    @property
    def quiet_period_ms(self) -> int: ...
    @property
    def max_wait_ms(self) -> int: ...
    @property
    def resync_interval_s(self) -> float: ...
    @property
    def log_format(self) -> Literal["json", "console"] | None: ...
    @property
    def metrics_address(self) -> str | None: ...
    @property
    def probe_interval_s(self) -> float: ...
    @property
    def metrics_per_trust_entry(self) -> bool: ...
    @property
    def hooks(self) -> tuple[HookSettings, ...]: ...
    @property
    def verify(self) -> VerifySettings: ...
    @property
    def audit(self) -> AuditSettings: ...
    @property
    def audit_path(self) -> Path: ...
    @property
    def trust_path(self) -> Path: ...
    @property
    def trust_refresh_argv(self) -> tuple[str, ...]: ...
    @property
    def key_mode_bits(self) -> int: ...


# The derived values, written once for both implementations.


def audit_path(settings: Settings) -> Path:
    if settings.audit_log is not None:
        return settings.audit_log
    return settings.var_dir / "audit.jsonl"


def trust_path(settings: Settings) -> Path:
    if settings.trust_dir is not None:
        return settings.trust_dir
    default = TRUST_BACKENDS[settings.trust_store][0]
    assert default is not None  # the model requires trust_dir for `directory`
    return default


def trust_refresh_argv(settings: Settings) -> tuple[str, ...]:
    """The refresh command; empty when the backend refreshes in process."""
    argv = settings.trust_refresh or TRUST_BACKENDS[settings.trust_store][1]
    return tuple(arg.replace("{trust_dir}", str(trust_path(settings))) for arg in argv)


@dataclass(frozen=True, slots=True)
class HookValues:
    name: str
    on: tuple[Kind, ...]
    check: tuple[str, ...] | None
    run: tuple[str, ...]
    timeout_s: float


@dataclass(frozen=True, slots=True)
class VerifyValues:
    console: str | None
    timeout_s: float


@dataclass(frozen=True, slots=True)
class AuditValues:
    witness: tuple[str, ...] | None
    witness_timeout_s: float


@dataclass(frozen=True, slots=True)
class SettingsValues:
    """Settings the model validated (elsewhere), as plain values: see the module docstring."""

    state_dir: Path
    root: Path
    var_dir: Path
    audit_log: Path | None
    trust_store: TrustStoreName
    trust_dir: Path | None
    trust_refresh: tuple[str, ...] | None
    trust_prefix: str
    key_dirs: tuple[Path, ...]
    key_mode: Literal["0600", "0640"]
    file_group: str | None
    nginx_ssl_on: bool | Literal["auto"]
    quiet_period_ms: int
    max_wait_ms: int
    resync_interval_s: float
    log_format: Literal["json", "console"] | None
    metrics_address: str | None
    probe_interval_s: float
    metrics_per_trust_entry: bool
    hooks: tuple[HookValues, ...]
    verify: VerifyValues
    audit: AuditValues

    @property
    def audit_path(self) -> Path:
        return audit_path(self)

    @property
    def trust_path(self) -> Path:
        return trust_path(self)

    @property
    def trust_refresh_argv(self) -> tuple[str, ...]:
        return trust_refresh_argv(self)

    @property
    def key_mode_bits(self) -> int:
        return int(self.key_mode, 8)

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> SettingsValues:
        """What the model's `model_dump(mode="json")` gave, back as values (a settings file
        already checked: the shapes are the model's)."""
        data = dict(raw)

        def path(value: object) -> Path | None:
            return None if value is None else Path(cast(str, value))

        def argv(value: object) -> tuple[str, ...] | None:
            return None if value is None else tuple(cast(list[str], value))

        hooks = tuple(
            HookValues(
                name=cast(str, hook["name"]),
                on=tuple(cast(list[Kind], hook["on"])),
                check=argv(hook["check"]),
                run=tuple(cast(list[str], hook["run"])),
                timeout_s=float(cast(float, hook["timeout_s"])),
            )
            for hook in cast(list[dict[str, object]], data.pop("hooks"))
        )
        verify = cast(dict[str, object], data.pop("verify"))
        audit = cast(dict[str, object], data.pop("audit"))
        return cls(
            state_dir=Path(cast(str, data["state_dir"])),
            root=Path(cast(str, data["root"])),
            var_dir=Path(cast(str, data["var_dir"])),
            audit_log=path(data["audit_log"]),
            trust_store=cast(TrustStoreName, data["trust_store"]),
            trust_dir=path(data["trust_dir"]),
            trust_refresh=argv(data["trust_refresh"]),
            trust_prefix=cast(str, data["trust_prefix"]),
            key_dirs=tuple(Path(d) for d in cast(list[str], data["key_dirs"])),
            key_mode=cast(Literal["0600", "0640"], data["key_mode"]),
            file_group=cast("str | None", data["file_group"]),
            nginx_ssl_on=cast("bool | Literal['auto']", data["nginx_ssl_on"]),
            quiet_period_ms=cast(int, data["quiet_period_ms"]),
            max_wait_ms=cast(int, data["max_wait_ms"]),
            resync_interval_s=float(cast(float, data["resync_interval_s"])),
            log_format=cast("Literal['json', 'console'] | None", data["log_format"]),
            metrics_address=cast("str | None", data["metrics_address"]),
            probe_interval_s=float(cast(float, data["probe_interval_s"])),
            metrics_per_trust_entry=bool(data["metrics_per_trust_entry"]),
            hooks=hooks,
            verify=VerifyValues(
                console=cast("str | None", verify["console"]),
                timeout_s=float(cast(float, verify["timeout_s"])),
            ),
            audit=AuditValues(
                witness=argv(audit["witness"]),
                witness_timeout_s=float(cast(float, audit["witness_timeout_s"])),
            ),
        )
