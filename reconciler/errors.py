"""The exception tree: each class is named for what the caller should do about it."""

from __future__ import annotations


class ReconcilerError(Exception):
    """Root of every error this package raises on purpose."""


class UsageError(ReconcilerError):
    """The command line is wrong (exit 64)."""


class SettingsError(ReconcilerError):
    """A setting is missing or invalid; fix the settings file, environment or flags."""


class StateRejectedError(ReconcilerError):
    """The desired state is invalid: nothing was applied; fix the desired state."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = messages
        super().__init__("desired state rejected: " + "; ".join(messages))


class LockHeldError(ReconcilerError):
    """Another reconciler holds the ROOT lock; wait for it or stop it."""


class ApplyError(ReconcilerError):
    """Writing a target failed; the previous generation is still in place."""


class HookFailedError(ReconcilerError):
    """A hook, check or verification failed; the pass was rolled back."""


class VerificationError(ReconcilerError):
    """After the hooks, the services do not show what was applied; the pass was rolled back."""


class AuditError(ReconcilerError):
    """The audit log cannot be written or read; the step it would record is not done."""
