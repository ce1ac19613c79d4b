"""The backend side: a connection to the District's server that starts with a PROXY v2 header
and logs in with the gateway key, and the forwarded SFTP (or scp) channel, pumped both ways
with each channel's own flow control, each loop turn's data sent as full packets."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR
from asyncssh.stream import SSHReader, SSHWriter

from sftpd.gateway import packetpath
from sftpd.gateway.routes import Route
from sftpd.server import batching, proxyheader
from sftpd.server.internals import Internal

# The cluster-internal leg: AES-GCM, which the CPU does in hardware, and no compression.
BACKEND_ENCRYPTION = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                      "chacha20-poly1305@openssh.com"]

# The largest packet the gateway takes on the backend leg: a whole SFTP read reply in one
# packet (OpenSSH asks for up to 255 KiB a read; the district server cuts its replies at the
# size its peer announces), instead of a 32 KiB packet and a 13-byte one per reply.
BACKEND_PACKET_SIZE = 256 * 1024

# What ForwardedSession and TurnWriter rely on (checked by sftpd.server.internals before the
# gateway starts).
PATCHED: tuple[Internal, ...] = (
    Internal(asyncssh.SSHServerProcess, "_start_process", ("self", "stdin", "stdout", "stderr"),
             "ForwardedSession"),
    Internal(asyncssh.SSHServerProcess, "_chan", None, "ForwardedSession"),
    Internal(asyncssh.SSHServerProcess, "_conn", None, "ForwardedSession"),
    Internal(asyncssh.SSHServerChannel, "_send_pktsize", None, "TurnWriter"),
    Internal(asyncssh.SSHServerChannel, "_send_state", None, "TurnWriter"),
    Internal(asyncssh.SSHClientChannel, "_send_pktsize", None, "TurnWriter"),
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
    packetpath.receive_in_pieces(conn)
    packetpath.skip_packet_logging(conn)
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


class TurnWriter:
    """Gathers the writes one loop turn makes to a channel and hands them over as one, cut
    into packets of the peer's maximum size.

    Forwarding packet by packet repeats the other leg's packet boundaries: an SFTP read reply
    of 32 KiB and 13 bytes becomes a full packet and a 13-byte one, twice the packets (and
    the per-packet Python work on both sides) the bytes need. Gathered per turn, the same
    bytes in the same order go out in full packets. What one turn gathers is what the other
    leg delivered in that turn, itself bounded by that leg's window; the channel's own
    flow control (pause the reading side while the window is full) acts on every write as
    before. Everything gathered is written before the channel sends EOF, closes or reports
    an exit status, so nothing is lost or reordered behind them.
    """

    __slots__ = ("_chan", "_loop", "_pending", "_size", "_write")

    def __init__(self, chan: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._chan = chan
        self._loop = loop
        self._write = chan.write
        self._pending: list[tuple[bytes, int | None]] = []
        # The peer's maximum packet size; asyncssh does not expose it publicly.
        self._size: int = getattr(chan, "_send_pktsize", 0) or batching.DEFAULT_PACKET_SIZE

    def install(self) -> None:
        chan = self._chan
        chan.write = self.write
        for name in ("write_eof", "close", "exit", "exit_with_signal"):
            original = getattr(chan, name, None)
            if original is not None:
                setattr(chan, name, self._flushing(original))

    def _flushing(self, method: Any) -> Any:
        def flush_then(*args: Any, **kwargs: Any) -> Any:
            self.flush()
            return method(*args, **kwargs)
        return flush_then

    def write(self, data: bytes, datatype: int | None = None) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append((data, datatype))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        start = 0
        while start < len(pending):
            datatype = pending[start][1]
            end = start + 1
            while end < len(pending) and pending[end][1] == datatype:
                end += 1
            data = pending[start][0] if end == start + 1 else \
                b"".join(item[0] for item in pending[start:end])
            start = end
            if self._chan._send_state != "open":
                return  # closed under us (the peer went away): asyncssh drops late data too
            view = memoryview(data)
            for at in range(0, len(view), self._size):
                self._write(view[at:at + self._size], datatype)


async def pump(process: asyncssh.SSHServerProcess[bytes],
               backend: asyncssh.SSHClientConnection) -> int:
    """Run the client's request on the backend and pump both ways until it ends; its exit
    status. redirect() between two SSH processes pauses the reading side while the writing
    side's channel window is full, so neither side buffers more than a window (plus what one
    loop turn gathers, see TurnWriter)."""
    subsystem = process.subsystem
    upstream = await backend.create_process(
        command=None if subsystem else process.command, subsystem=subsystem, encoding=None,
        max_pktsize=BACKEND_PACKET_SIZE)
    loop = asyncio.get_running_loop()
    for chan in (process.channel, upstream.channel):
        TurnWriter(chan, loop).install()
        packetpath.skip_packet_logging(chan)
    await upstream.redirect(stdin=process.stdin, stdout=process.stdout, stderr=process.stderr)
    await upstream.wait_closed()
    return upstream.exit_status or 0
