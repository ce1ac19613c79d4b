"""Numbered crash points for the crash-safety test: a real SIGKILL of this very process.

When SFTPD_TEST_KILL_AT=N is set, the Nth call to `checkpoint()` kills the process with
SIGKILL (no cleanup, no flush, no rollback: what the kernel's OOM killer or a node failure
does). Unset, it costs one counter increment.
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "SFTPD_TEST_KILL_AT"
_kill_at = int(os.environ.get(KILL_AT_ENV, "0") or 0)
_count = 0


def checkpoint(label: str) -> None:
    """Mark a point between two durable steps (label documents where it is)."""
    global _count
    _count += 1
    if _kill_at and _count == _kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def passed() -> int:
    """How many checkpoints this process has passed (the test uses it to pick kill points)."""
    return _count
