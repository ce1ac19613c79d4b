"""A second database session that checks an upload's values while the import session loads it:
the check runs in a thread of its own, on a connection of its own, and only ever reads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg


class SiblingCheck:
    """Runs `check(session)` in parallel; its verdict is True only when the check ran to the
    end and found every value in order (an exception counts as a doubt)."""

    def __init__(self, origin: psycopg.Connection[Any],
                 check: Callable[[psycopg.Connection[Any]], bool], name: str) -> None:
        self.origin = origin
        self.check = check
        self.verdict = False
        self.failed = threading.Event()
        self.session: psycopg.Connection[Any] | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> bool:
        """Open the session and start checking; False when no second session can be had."""
        try:
            self.session = psycopg.connect(
                self.origin.info.dsn, password=self.origin.info.password, autocommit=True,
                application_name="sftpd process-epochs (checks)")
        except psycopg.Error:
            return False
        self.thread.start()
        return True

    def clean(self) -> bool:
        """Wait for the verdict."""
        self.thread.join()
        return self.verdict

    def stop(self) -> None:
        """Cancel a check still running (the import gave up) and close the session."""
        if self.session is None:
            return
        if self.thread.is_alive():
            self.session.cancel_safe()
            self.thread.join()
        self.session.close()

    def _run(self) -> None:
        assert self.session is not None
        try:
            self.verdict = self.check(self.session)
        except Exception:  # whatever it was, the staged path meets it again and reports it
            self.verdict = False
        if not self.verdict:
            self.failed.set()
