"""Connections before login have their own budget (per source, in all); channels are capped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from sftpd.server.limits import ConnectionLimits, RefusalThrottle
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("limits")
    srv = start_server(base / "data", keys, base / "audit.jsonl",
                       "--max-unauthenticated-per-source", "3", "--max-unauthenticated", "6",
                       "--max-sessions", "2", "--max-channels", "4",
                       "--login-grace-time", "60")
    yield srv
    assert srv.stop() == 0


def idle_socket(server: ServerProcess, source: str) -> socket.socket:
    """A TCP connection that never says anything."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                    source_address=(source, 0))


def is_refused(sock: socket.socket, within: float = 15.0) -> bool:
    """True when the server closes the connection within `within` (an admitted one waits for
    the client's version line for the whole login grace time)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


def greeted(sock: socket.socket) -> bool:
    """True when the server sent its version line: the connection was admitted."""
    sock.settimeout(10)
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
    return data.startswith(b"SSH-2.0-")


def metric(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    raise AssertionError(f"no {name} in the metrics")


async def connect(server: ServerProcess, keys: Keys) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect("127.0.0.1", server.port, username=LOGIN,
                                  client_keys=[str(keys.client)], known_hosts=None,
                                  agent_path=None)


async def test_idle_unauthenticated_sockets_do_not_lock_the_district_out(
        server: ServerProcess, keys: Keys) -> None:
    with contextlib.ExitStack() as stack:
        # A stranger at 127.0.0.9 holds idle sockets: three are admitted, more are refused
        # at once, each refusal counted and the first logged.
        held = [stack.enter_context(idle_socket(server, "127.0.0.9")) for _ in range(3)]
        assert all(greeted(s) for s in held)
        extra = [stack.enter_context(idle_socket(server, "127.0.0.9")) for _ in range(5)]
        assert all(is_refused(s) for s in extra)
        refused = server.wait_event("connection.refused")
        assert refused[0]["reason"] == "too_many_unauthenticated_from_source"
        assert refused[0]["source"] == "127.0.0.9"
        assert metric(server, "sftpd_unauthenticated_connections") == 3
        assert metric(server, 'sftpd_connections_rejected_total{reason='
                              '"too_many_unauthenticated_from_source"}') == 5
        # The district, from its own address, still logs in, twice (--max-sessions 2) ...
        first, second = await connect(server, keys), await connect(server, keys)
        async with first, second, first.start_sftp_client() as sftp:
            assert "upload" in await sftp.listdir("/")
            # ... and a third logged-in session is refused, with the reason.
            with pytest.raises((asyncssh.Error, ConnectionError)):
                third = await connect(server, keys)
                third.close()
            assert any(e["reason"] == "too_many_sessions"
                       for e in server.wait_event("connection.refused", count=2))
        # The total: 3 from .9 and 3 from .10 fill --max-unauthenticated 6; .11 is refused.
        more = [stack.enter_context(idle_socket(server, "127.0.0.10")) for _ in range(3)]
        assert all(greeted(s) for s in more)
        assert is_refused(stack.enter_context(idle_socket(server, "127.0.0.11")))
        assert any(e["reason"] == "too_many_unauthenticated"
                   for e in server.wait_event("connection.refused", count=3))
    # Closed sockets give their places back: the district logs in again.
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = await connect(server, keys)
            break
        except (asyncssh.Error, ConnectionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    conn.close()
    await conn.wait_closed()


async def test_channels_per_connection_are_capped(server: ServerProcess, keys: Keys) -> None:
    async with await connect(server, keys) as conn:
        clients = [await conn.start_sftp_client() for _ in range(4)]
        for _ in range(3):
            with pytest.raises(asyncssh.ChannelOpenError, match="Too many channels"):
                await conn.start_sftp_client()
        # The open ones keep working; closing one makes room for another.
        assert "upload" in await clients[0].listdir("/")
        clients[0].exit()
        await clients[0].wait_closed()
        # (The server forgets the channel once its own close is out, a moment later.)
        deadline = time.monotonic() + 15
        while True:
            try:
                replacement = await conn.start_sftp_client()
                break
            except asyncssh.ChannelOpenError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert "downloads" in await replacement.listdir("/")
        for client in [*clients[1:], replacement]:
            client.exit()
    refused = server.wait_event("channel.refused")
    assert len(refused) == 1 and refused[0]["open_channels"] == 4
    deadline = time.monotonic() + 10
    while not any("channels_refused" in e for e in server.events("session.ended")):
        assert time.monotonic() < deadline, "no session.ended line counting the refused channels"
        await asyncio.sleep(0.05)
    counted = [e["channels_refused"] for e in server.events("session.ended")
               if "channels_refused" in e]
    assert len(counted) == 1 and counted[0] >= 3


def test_limit_units() -> None:
    limits = ConnectionLimits(unauthenticated_per_source=2, unauthenticated=3, sessions=1)
    assert limits.admit("a") is None and limits.admit("a") is None
    assert limits.admit("a") == "too_many_unauthenticated_from_source"
    assert limits.admit("b") is None
    assert limits.admit("c") == "too_many_unauthenticated"
    assert limits.log_in("a") is None  # a's first moves to the sessions ...
    assert limits.admit("c") is None  # ... which frees a place before login
    assert limits.log_in("b") == "too_many_sessions"
    limits.release("a", logged_in=True)
    assert limits.log_in("b") is None
    assert (limits.waiting, limits.logged_in) == (2, 1)
    now = [0.0]
    throttle = RefusalThrottle(interval_seconds=10, clock=lambda: now[0])
    assert throttle.check("r", "x") == {}
    assert throttle.check("r", "x") is None and throttle.check("r", "x") is None
    assert throttle.check("r", "y") == {}
    now[0] = 11
    assert throttle.check("r", "x") == {"repeated": 2}
    throttle.check("r", "x")
    now[0] = 30
    assert throttle.prune() == [("r", "x", 1)]


def test_limit_flags_are_checked(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(AssertionError, match=r"--max-channels: '0': must be at least 1"):
        start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl", "--max-channels", "0")
