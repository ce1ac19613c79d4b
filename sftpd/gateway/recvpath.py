"""asyncssh's receive path fed a piece at a time, so parsing a large read does not copy the rest
of it again for every packet."""

from __future__ import annotations

from typing import Any

import asyncssh

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
