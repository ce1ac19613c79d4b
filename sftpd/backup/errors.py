"""The error a backup fails with: a reason for the operator, and a message for people."""

from __future__ import annotations


class BackupError(Exception):
    """A backup could not be made; `reason` is a CamelCase word for conditions and results."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
