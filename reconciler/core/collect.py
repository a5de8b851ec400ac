"""The findings of one check, collected in the order they were found."""

from __future__ import annotations

from typing import Literal

from reconciler.core.desired import Finding


def error(file: str, field: str | None, reason: str, rule: str = "") -> Finding:
    """One error finding, for a check that reports a single problem."""
    return Finding("error", file, field, reason, rule)


class Findings:
    """The findings of one validator call, in the order they were found."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def error(self, file: str, field: str | None, reason: str, rule: str = "") -> None:
        self.items.append(error(file, field, reason, rule))

    def warning(self, file: str, field: str | None, reason: str, rule: str = "") -> None:
        self.items.append(Finding("warning", file, field, reason, rule))

    def add(
        self,
        severity: Literal["error", "warning"],
        file: str,
        field: str | None,
        reason: str,
        rule: str = "",
    ) -> None:
        self.items.append(Finding(severity, file, field, reason, rule))

    @property
    def has_error(self) -> bool:
        return any(f.severity == "error" for f in self.items)
