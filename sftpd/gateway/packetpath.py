"""Per-packet work of asyncssh the gateway's data path does without: its input parsed a piece
at a time (not the whole read recopied for every packet), and packet logging while it is off."""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.logging import SSHLogger

from sftpd.server.internals import Internal

# asyncssh keeps unparsed input as one bytes object and slices each packet off its front,
# copying the rest every time: two copies of the remainder per packet. One socket read can
# hold 256 KiB (eight 32 KiB packets), so parsing it copied about eight times its size. Fed in
# pieces of this size, the remainder copied is at most a piece and a packet.
PIECE = 64 * 1024

PATCHED: tuple[Internal, ...] = (
    Internal(asyncssh.SSHServerConnection, "_recv_data", ("self",), "receive_in_pieces"),
    Internal(asyncssh.SSHServerConnection, "_inpbuf", None, "receive_in_pieces"),
    Internal(asyncssh.SSHClientConnection, "_recv_data", ("self",), "receive_in_pieces"),
    *(Internal(owner, name, ("self", "pkttype", "pktid", "packet", "note"),
               "skip_packet_logging")
      for owner in (asyncssh.SSHServerConnection, asyncssh.SSHClientConnection,
                    asyncssh.SSHServerChannel, asyncssh.SSHClientChannel)
      for name in ("log_sent_packet", "log_received_packet")),
)


def receive_in_pieces(conn: Any) -> None:
    """Make conn parse what it received PIECE bytes at a time (same bytes, same order)."""
    parse = conn._recv_data

    def parse_in_pieces() -> None:
        received = conn._inpbuf
        if len(received) <= PIECE:
            parse()
            return
        view = memoryview(received)
        conn._inpbuf = b""
        # Every piece goes into the buffer even when parsing stops early (a packet handled
        # asynchronously, a closed connection): asyncssh would have held all of it too.
        for start in range(0, len(view), PIECE):
            conn._inpbuf += view[start:start + PIECE]
            parse()

    # asyncssh calls self._recv_data() when data arrives; an instance attribute shadows it.
    conn._recv_data = parse_in_pieces


# asyncssh logs a packet only at its debug level 3 (asyncssh.set_debug_level), which the
# gateway never sets; below it, each packet's log call still gathers and formats its details.
PACKET_DEBUG_LEVEL = 3


def _not_logged(pkttype: int, pktid: int | None, packet: Any, note: str = "") -> None:
    """A packet asyncssh would not log at the debug level in force."""


def skip_packet_logging(handler: Any) -> None:
    """Make a connection or channel skip asyncssh's per-packet log call while packet logging
    is off (it would format the packet's details and then drop them)."""
    # A class attribute of asyncssh's logger; were it gone, logging is left as it is.
    if getattr(SSHLogger, "_debug_level", PACKET_DEBUG_LEVEL) >= PACKET_DEBUG_LEVEL:
        return
    # asyncssh calls handler.log_sent_packet()/log_received_packet() for every packet; instance
    # attributes shadow the methods.
    handler.log_sent_packet = _not_logged
    handler.log_received_packet = _not_logged
