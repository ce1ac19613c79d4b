"""Fewer system calls, copies and packets on asyncssh's send path: one socket write per event-loop
turn per connection, no SSH_MSG_IGNORE before every packet, and SFTP replies handed to the channel
already cut at its packet size."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import asyncssh

from sftpd.server.internals import Internal


class WriteBatcher:
    """Collects what an asyncssh connection sends during one loop turn and writes it at once.

    asyncssh hands every SSH packet to the transport on its own (and, unless drop_ignore_packets
    is also applied, precedes each one with an SSH_MSG_IGNORE packet), so a download of 32 KiB
    channel packets cost two send() calls per packet, and a session's handshake about 35. OpenSSH
    instead writes its whole output buffer once per poll() turn. Gathering the packets queued in
    one turn and writing them together does the same: the bytes and their order are unchanged,
    only the number of system calls drops. The write happens before anything scheduled after the
    first packet of the turn, including asyncssh's own deferred abort of a closing transport,
    so a final disconnect message still goes out.
    """

    __slots__ = ("_conn", "_loop", "_pending", "_transport")

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self._pending: list[bytes] = []
        self._transport: asyncio.WriteTransport | None = None

    def send(self, data: bytes) -> None:
        transport = self._conn._transport
        if transport is None:
            return  # asyncssh drops what is sent once it has let go of its transport; so do we
        if not self._pending:
            # asyncio's or uvloop's (which does not subclass asyncio's classes).
            self._transport = cast(asyncio.WriteTransport, transport)
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        transport, self._transport = self._transport, None
        pending, self._pending = self._pending, []
        if transport is not None and not transport.is_closing():
            # A peer that is gone is asyncssh's to notice, through connection_lost.
            with contextlib.suppress(ConnectionError):
                transport.writelines(pending)


# The asyncssh internals these patches replace or read; the server checks them at start.
PATCHED: tuple[Internal, ...] = (
    Internal(asyncssh.SSHServerConnection, "_send", ("self", "data"), "batch_writes"),
    Internal(asyncssh.SSHServerConnection, "_transport", None, "batch_writes"),
    Internal(asyncssh.SSHServerConnection, "send_packet", ("self", "pkttype", "args", "handler"),
             "drop_ignore_packets"),
    Internal(asyncssh.SSHServerChannel, "write", ("self", "data", "datatype"),
             "cut_channel_writes"),
    Internal(asyncssh.SSHServerChannel, "_send_pktsize", None, "cut_channel_writes"),
)


def batch_writes(conn: asyncssh.SSHServerConnection) -> None:
    """Route conn's packet writes through a WriteBatcher (asyncssh sends every packet through
    its private _send)."""
    batcher = WriteBatcher(conn, asyncio.get_running_loop())
    conn._send = batcher.send  # type: ignore[method-assign]


# SSH_MSG_IGNORE (RFC 4253, section 11.2) and the empty string asyncssh sends in it.
MSG_IGNORE = 2
_EMPTY_STRING = b"\0\0\0\0"


def drop_ignore_packets(conn: asyncssh.SSHServerConnection) -> None:
    """Stop conn from sending an empty SSH_MSG_IGNORE ahead of every encrypted packet.

    asyncssh inserts one before each packet once encryption is on: the countermeasure against
    the chosen-plaintext attack on CBC mode, whose next IV is the last ciphertext block the
    attacker saw. sftpd offers no CBC cipher (AES-GCM, ChaCha20-Poly1305 and AES-CTR only, as
    OpenSSH, which sends no such packets), so each one is pure cost: a second padding, random
    padding bytes, encryption and MAC per data packet, about a fifth of the server's CPU on a
    download. An SSH_MSG_IGNORE carries no meaning for the peer, so leaving it out changes
    nothing else; asyncssh numbers packets as it sends them, so sequence numbers stay
    consistent.
    """
    send_packet: Callable[..., None] = conn.send_packet

    def send_packet_unless_padding(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY_STRING,):
            return
        send_packet(pkttype, *args, handler=handler)

    # asyncssh calls self.send_packet() for its own packets and its channels'; an instance
    # attribute shadows the method for both.
    conn.send_packet = send_packet_unless_padding  # type: ignore[method-assign]


# What asyncssh and OpenSSH clients announce as their largest channel packet.
DEFAULT_PACKET_SIZE = 32768


def cut_channel_writes(chan: asyncssh.SSHServerChannel[bytes]) -> None:
    """Hand chan each write as pieces of at most one channel packet.

    asyncssh keeps a write as one bytearray and sends it as packets by deleting each packet's
    bytes from the front of that bytearray, which moves the rest of it every time: cutting a
    255 KiB SFTP read reply (the OpenSSH client's request size) into 32 KiB packets moves about
    3.5 times its size in memory. Pieces of one packet each are sent whole instead. The bytes
    and their order on the wire are unchanged.
    """
    write: Callable[..., None] = chan.write
    # The peer's maximum packet size; asyncssh does not expose it publicly.
    size = getattr(chan, "_send_pktsize", 0) or DEFAULT_PACKET_SIZE

    def write_in_pieces(data: bytes, datatype: int | None = None) -> None:
        if len(data) <= size:
            write(data, datatype)
            return
        view = memoryview(data)
        for start in range(0, len(view), size):
            write(view[start:start + size], datatype)

    chan.write = write_in_pieces  # type: ignore[method-assign]
