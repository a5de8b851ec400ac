"""What test modules share: builders, real servers, waits; imported by tests, never by the code."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
