"""Where settings are looked for and what they default to, for the model and the loader alike."""

from __future__ import annotations

from pathlib import Path

#: The settings file read when neither --config nor RECONCILER_CONFIG names one (if it exists).
DEFAULT_CONFIG = Path("/etc/reconciler/reconciler.toml")
#: `state_dir` when no source sets it.
DEFAULT_STATE_DIR = Path("/etc/reconciler/desired-state")
