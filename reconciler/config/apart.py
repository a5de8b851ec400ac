"""Settings validated in a child process: the daemon holds them without loading pydantic-settings.

pydantic-settings, and the pydantic models it builds, take memory that CPython never gives back
(docs/performance.md says how much), for settings read once at start-up (and at a reload). So
`reconciler run` has the model read and check them in a child (`python -m
reconciler.config.apart`), which sends the validated values back as JSON, and keeps them as a
plain `SettingsValues`. What the child says wrong is raised here as the same one-line
SettingsError `load_settings` raises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from reconciler.config.view import SettingsValues
from reconciler.errors import SettingsError

__all__ = ["load_settings_apart"]

_BAD_SETTINGS = 2
"""The child's exit code for a setting it refused (the message is on its stdout)."""
_TIMEOUT_S = 120


def load_settings_apart(config: Path | None = None, **flags: Path | None) -> SettingsValues:
    """`load_settings(config, **flags)`, run in a child process: the same values, the same
    errors, without pydantic-settings in this one. The child inherits the environment and the
    working directory, so relative paths and RECONCILER_* variables mean what they mean here."""
    request = json.dumps(
        {
            "config": None if config is None else str(config),
            "flags": {name: str(value) for name, value in flags.items() if value is not None},
        }
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "reconciler.config.apart", request],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
            env=dict(os.environ),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SettingsError(f"settings: the process checking them failed: {exc}") from exc
    if done.returncode == _BAD_SETTINGS:
        raise SettingsError(json.loads(done.stdout)["error"])
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise SettingsError(
            f"settings: the process checking them exited {done.returncode}: {tail[0]}"
        )
    return SettingsValues.from_json(json.loads(done.stdout))


def _main(argv: list[str]) -> int:
    from reconciler.config.load import load_settings

    request: dict[str, Any] = json.loads(argv[1])
    config = request["config"]
    flags = {name: Path(value) for name, value in request["flags"].items()}
    try:
        settings = load_settings(None if config is None else Path(config), **flags)
    except SettingsError as exc:
        print(json.dumps({"error": str(exc)}))
        return _BAD_SETTINGS
    print(json.dumps(settings.model_dump(mode="json")))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
