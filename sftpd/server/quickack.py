"""Prompt TCP acknowledgements during the SSH handshake, where delayed ACKs stall every login."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

import asyncssh

from sftpd.server.internals import Internal

# Linux only; elsewhere the handshake keeps the kernel's default ACK timing.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
# The asyncssh internal ack_promptly wraps; the server checks it at start.
PATCHED: tuple[Internal, ...] = (
    Internal(asyncssh.SSHServerConnection, "_recv_data", ("self",), "ack_promptly"),
)


def ack_promptly(conn: asyncssh.SSHServerConnection) -> Callable[[], None]:
    """Acknowledge what conn receives as soon as asyncssh has read it; returns the undo.

    The OpenSSH client does not set TCP_NODELAY on a non-interactive session such as sftp, and
    it writes some handshake messages as two segments in a row (KEXINIT then the key-exchange
    init; NEWKEYS then the service request). Nagle's algorithm holds the second segment until
    the first is acknowledged, and a server that has nothing to say yet delays that ACK by the
    kernel's 40 ms minimum: two such stalls made up 80 of the ~100 ms a serial `sftp -b` login
    took. Setting TCP_QUICKACK after each read sends the pending ACK at once (Linux does not
    keep the option set, hence once per read). Only the handshake needs it: afterwards every
    client request gets a reply that carries the ACK, and a bulk transfer should not pay a
    system call per read, so the caller undoes it once the login has completed.
    """
    sock = conn.get_extra_info("socket")
    if _TCP_QUICKACK is None or sock is None:
        return lambda: None
    receive: Callable[[], None] = conn._recv_data

    def receive_and_ack() -> None:
        receive()
        with contextlib.suppress(OSError):  # a socket already closed has nothing to ACK
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    # asyncssh calls self._recv_data() on every chunk it receives; an instance attribute
    # shadows the method, and deleting it restores the method.
    instance: Any = conn
    instance._recv_data = receive_and_ack

    def undo() -> None:
        with contextlib.suppress(AttributeError):
            del instance._recv_data

    return undo
