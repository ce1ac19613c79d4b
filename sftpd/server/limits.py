"""How many connections may wait at the login, how many sessions may be logged in, channels each."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from sftpd.server.internals import Internal

TOO_MANY_FROM_SOURCE = "too_many_unauthenticated_from_source"
TOO_MANY_UNAUTHENTICATED = "too_many_unauthenticated"
TOO_MANY_SESSIONS = "too_many_sessions"


@dataclass
class ConnectionLimits:
    """Counts connections before login (per source and in all) apart from logged-in sessions.

    A connection that has not logged in yet costs a key exchange and a login grace period and
    proves nothing, so it gets its own small budget: idle sockets from one address (or many)
    then use up that budget, never the district's logged-in sessions.
    """

    unauthenticated_per_source: int
    unauthenticated: int
    sessions: int
    _waiting: Counter[str] = field(default_factory=Counter)
    _waiting_total: int = 0
    _logged_in: int = 0

    def admit(self, source: str) -> str | None:
        """Count a new connection from source as waiting to log in; the reason if it may not."""
        if self._waiting[source] >= self.unauthenticated_per_source:
            return TOO_MANY_FROM_SOURCE
        if self._waiting_total >= self.unauthenticated:
            return TOO_MANY_UNAUTHENTICATED
        self._waiting[source] += 1
        self._waiting_total += 1
        return None

    def log_in(self, source: str) -> str | None:
        """Move an admitted connection to the logged-in sessions; the reason if it may not (it
        then stays counted as waiting until released)."""
        if self._logged_in >= self.sessions:
            return TOO_MANY_SESSIONS
        self._forget_waiting(source)
        self._logged_in += 1
        return None

    def release(self, source: str, logged_in: bool) -> None:
        """Forget an admitted connection that has closed."""
        if logged_in:
            self._logged_in -= 1
        else:
            self._forget_waiting(source)

    def _forget_waiting(self, source: str) -> None:
        self._waiting_total -= 1
        self._waiting[source] -= 1
        if self._waiting[source] <= 0:
            del self._waiting[source]

    @property
    def waiting(self) -> int:
        return self._waiting_total

    @property
    def logged_in(self) -> int:
        return self._logged_in


@dataclass
class RefusalThrottle:
    """Lets one refusal per (reason, source) through per interval and counts the rest.

    A flood of refused connections must not become a flood of log lines: the first is logged at
    once, later ones in the same interval only as the `repeated` count of the next line.
    """

    interval_seconds: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _repeated: Counter[tuple[str, str]] = field(default_factory=Counter)

    def check(self, reason: str, source: str) -> dict[str, Any] | None:
        """Extra fields for the log line when this refusal is to be logged, else None."""
        key = (reason, source)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_seconds:
            self._repeated[key] += 1
            return None
        self._last[key] = now
        repeated = self._repeated.pop(key, 0)
        return {"repeated": repeated} if repeated else {}

    def prune(self) -> list[tuple[str, str, int]]:
        """Forget keys quiet for an interval; (reason, source, repeated) of those with unlogged
        repeats, for the caller to log so that no refusal goes uncounted."""
        now = self.clock()
        unlogged: list[tuple[str, str, int]] = []
        for key in [k for k, t in self._last.items() if now - t >= self.interval_seconds]:
            del self._last[key]
            repeated = self._repeated.pop(key, 0)
            if repeated:
                unlogged.append((*key, repeated))
        return unlogged

# What cap_channels wraps and reads (checked before the server starts, sftpd.server.internals).
PATCHED: tuple[Internal, ...] = (
    Internal(asyncssh.SSHServerConnection, "_process_session_open", ("self", "packet"),
             "cap_channels"),
    Internal(asyncssh.SSHServerConnection, "_channels", None, "cap_channels"),
)


def cap_channels(conn: asyncssh.SSHServerConnection, limit: int,
                 on_refused: Callable[[int], None]) -> bool:
    """Refuse a session channel once `limit` channels are open on conn; on_refused(open count).

    asyncssh opens as many session channels as a client asks for, each with its own SFTP server
    and buffers, and calls no application hook before it does when an sftp_factory is set; its
    per-type open handler is looked up on the connection, so it is wrapped there. False (nothing
    changed) if this asyncssh has no such handler.
    """
    original = getattr(conn, "_process_session_open", None)
    if not callable(original) or not isinstance(getattr(conn, "_channels", None), dict):
        return False

    def limited(packet: Any) -> Any:
        open_now = len(conn._channels)
        if open_now >= limit:
            on_refused(open_now)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            "Too many channels on this connection")
        return original(packet)

    conn._process_session_open = limited  # type: ignore[method-assign]
    return True
