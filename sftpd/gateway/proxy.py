"""The backend side: a connection to the District's server that starts with a PROXY v2 header
and logs in with the gateway key, and the forwarded SFTP (or scp) channel, pumped both ways
with each channel's own flow control."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR
from asyncssh.stream import SSHReader, SSHWriter

from sftpd.gateway.routes import Route
from sftpd.server import batching, proxyheader
from sftpd.server.internals import Internal

# The cluster-internal leg: AES-GCM, which the CPU does in hardware, and no compression.
BACKEND_ENCRYPTION = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                      "chacha20-poly1305@openssh.com"]


# What ForwardedSession relies on (checked by sftpd.server.internals before the gateway starts).
PATCHED: tuple[Internal, ...] = (
    Internal(asyncssh.SSHServerProcess, "_start_process", ("self", "stdin", "stdout", "stderr"),
             "ForwardedSession"),
    Internal(asyncssh.SSHServerProcess, "_chan", None, "ForwardedSession"),
    Internal(asyncssh.SSHServerProcess, "_conn", None, "ForwardedSession"),
)


@dataclass(frozen=True)
class Client:
    """The client a backend connection is made for, as the PROXY header tells it."""

    address: str
    port: int
    local_address: str  # where the client reached the gateway
    local_port: int
    fingerprint: str


def _known_hosts(route: Route) -> Any:
    """The backend's host keys from the routing entry; None (no check) when it lists none."""
    if not route.host_keys:
        return None
    return ([asyncssh.import_public_key(line) for line in route.host_keys], [], [])


async def open_backend(route: Route, client: Client, gateway_key: asyncssh.SSHKey,
                       seconds: float) -> asyncssh.SSHClientConnection:
    """Connect, send the header, log in as the District's login with the gateway key; each
    step bounded by `seconds`."""
    timeout = seconds
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(route.host, route.port, type=socket.SOCK_STREAM), timeout)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        header = proxyheader.encode((client.address, client.port),
                                    (client.local_address, client.local_port),
                                    client.fingerprint)
        await asyncio.wait_for(loop.sock_sendall(sock, header), timeout)
        conn = await asyncssh.connect(
            route.host, route.port, sock=sock, username=route.login, client_keys=[gateway_key],
            known_hosts=_known_hosts(route), agent_path=None, config=[],
            preferred_auth="publickey", encryption_algs=BACKEND_ENCRYPTION,
            compression_algs=["none"], login_timeout=timeout, connect_timeout=timeout,
            keepalive_interval=60)
    except BaseException:
        sock.close()
        raise
    # The backend leg gets the server's send-path savings too (the same private methods:
    # both connection classes inherit them from asyncssh's SSHConnection).
    batching.batch_writes(conn)  # type: ignore[arg-type]
    batching.drop_ignore_packets(conn)  # type: ignore[arg-type]
    return conn


class ForwardedSession(asyncssh.SSHServerProcess[bytes]):
    """A client's session channel: the SFTP subsystem or an scp command, nothing else (no
    shell, no other command or subsystem; no terminal: allow_pty is off)."""

    def shell_requested(self) -> bool:
        return False

    def exec_requested(self, command: str) -> bool:
        return command.startswith("scp ")

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        # SSHServerStreamSession.session_started would run asyncssh's own SFTP server for the
        # sftp subsystem; here every allowed request goes to the process handler.
        chan = self._chan
        stdin = SSHReader[bytes](self, chan)
        stdout = SSHWriter[bytes](self, chan)
        stderr = SSHWriter[bytes](self, chan, EXTENDED_DATA_STDERR)
        handler = self._start_process(stdin, stdout, stderr)
        assert self._conn is not None and asyncio.iscoroutine(handler)
        self._conn.create_task(handler, stdin.logger)


async def pump(process: asyncssh.SSHServerProcess[bytes],
               backend: asyncssh.SSHClientConnection) -> int:
    """Run the client's request on the backend and pump both ways until it ends; its exit
    status. redirect() between two SSH processes pauses the reading side while the writing
    side's channel window is full, so neither side buffers more than a window."""
    subsystem = process.subsystem
    upstream = await backend.create_process(
        command=None if subsystem else process.command, subsystem=subsystem, encoding=None)
    await upstream.redirect(stdin=process.stdin, stdout=process.stdout, stderr=process.stderr)
    await upstream.wait_closed()
    return upstream.exit_status or 0
