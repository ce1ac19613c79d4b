"""Stopping a listener: no new connections, its background tasks ended, a bounded goodbye."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable
from typing import Protocol

import asyncssh


class HasConnection(Protocol):
    """A connection's policy object, which knows its SSH connection once it is made."""

    @property
    def conn(self) -> asyncssh.SSHServerConnection | None: ...


async def stop_listener(acceptor: asyncssh.SSHAcceptor | None,
                        tasks: Iterable[asyncio.Task[None] | None],
                        connections: Collection[HasConnection], drained: asyncio.Event,
                        grace_seconds: float, goodbye: str) -> None:
    """Stop accepting, end the tasks, tell every client `goodbye`, and wait (at most
    grace_seconds) until drained is set by the last connection's end."""
    if acceptor is not None:
        acceptor.close()
    for task in tasks:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    for connection in list(connections):
        if connection.conn is not None:
            connection.conn.disconnect(asyncssh.DISC_BY_APPLICATION, goodbye)
    if connections:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), grace_seconds)
    if acceptor is not None:
        await acceptor.wait_closed()
