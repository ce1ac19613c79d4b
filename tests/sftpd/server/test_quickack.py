"""Quick ACKs during the handshake (sftpd/server/quickack.py), checked on the kernel's own state."""

from __future__ import annotations

import socket
from collections.abc import Callable

import asyncssh
import pytest

from sftpd.server.quickack import ack_promptly

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="Linux only")


class _Recorder(asyncssh.SSHServer):
    """Reads the socket's ACK mode in the middle of the login and after it."""

    seen: dict[str, object]

    def __init__(self) -> None:
        self.conn: asyncssh.SSHServerConnection | None = None
        self.undo: Callable[[], None] = lambda: None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.undo = ack_promptly(conn)

    def begin_auth(self, username: str) -> bool:
        assert self.conn is not None
        sock = self.conn.get_extra_info("socket")
        # Linux reports 1 while the socket acknowledges at once, and 0 once it has switched to
        # delayed ACKs ("pingpong" mode), which a server that has already answered the key
        # exchange is in by now unless something keeps setting TCP_QUICKACK.
        self.seen["quickack_during_login"] = sock.getsockopt(socket.IPPROTO_TCP,
                                                             socket.TCP_QUICKACK)
        self.seen["hooked_during_login"] = "_recv_data" in vars(self.conn)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True

    def auth_completed(self) -> None:
        self.undo()
        self.seen["hooked_after_login"] = "_recv_data" in vars(self.conn)


async def test_acks_promptly_until_login_then_steps_aside() -> None:
    seen: dict[str, object] = {}
    _Recorder.seen = seen
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")

    async def echo(process: asyncssh.SSHServerProcess[str]) -> None:
        process.stdout.write(await process.stdin.readline())
        process.exit(0)

    server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[host_key],
                                   server_factory=_Recorder, process_factory=echo)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect("127.0.0.1", port, username="district",
                                    client_keys=[client_key], known_hosts=None,
                                    agent_path=None) as conn:
            # Data still flows both ways once the hook has been taken off.
            result = await conn.run(input="still talking\n", check=True)
    finally:
        server.close()
        await server.wait_closed()
    assert result.stdout == "still talking\n"
    assert seen == {"quickack_during_login": 1, "hooked_during_login": True,
                    "hooked_after_login": False}
