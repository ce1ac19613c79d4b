"""The plugin's one error type: a message for people, an optional hint, and the exit code."""

from __future__ import annotations

# Exit codes, documented in docs/kubectl-district.md.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3


class PluginError(Exception):
    """Something the user can act on: printed as `error: message` and `hint: hint`."""

    def __init__(self, message: str, hint: str | None = None,
                 exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code
