"""The upload contract, disk full, limits and shutdown of a real `sftpd serve`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from sftpd.uploads import is_open_for_writing
from tests.conftest import missing
from tests.sftpd.server.conftest import (
    LOGIN,
    Keys,
    ServerProcess,
    openssh_sftp,
    start_server,
)


def connect(server: ServerProcess, keys: Keys) -> asyncssh.SSHClientConnection:
    return asyncssh.connect("127.0.0.1", server.port, username=LOGIN,  # type: ignore[return-value]
                            client_keys=[str(keys.client)], known_hosts=None, agent_path=None)


async def test_file_is_locked_while_written(server: ServerProcess, keys: Keys) -> None:
    target = server.root / "upload/2026-12-01T0200Z/users.csv"
    async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/2026-12-01T0200Z", exist_ok=True)
        f = await sftp.open("/upload/2026-12-01T0200Z/users.csv", "wb")
        await f.write(b"sourcedId,status\n")
        # The epoch processor's view, from this (another) process.
        assert await asyncio.to_thread(is_open_for_writing, target)
        # A second writer must neither succeed nor truncate what is being written.
        with pytest.raises(asyncssh.SFTPFailure, match="being written"):
            await sftp.open("/upload/2026-12-01T0200Z/users.csv", "wb")
        assert target.read_bytes() == b"sourcedId,status\n"
        await f.write(b"1,active\n")
        await f.close()
        assert not await asyncio.to_thread(is_open_for_writing, target)
    assert target.read_bytes() == b"sourcedId,status\n1,active\n"


async def test_cut_off_upload_is_removed(server: ServerProcess, keys: Keys) -> None:
    target = server.root / "upload/2026-12-02T0200Z/users.csv"
    conn = await connect(server, keys)
    sftp = await conn.start_sftp_client()
    await sftp.makedirs("/upload/2026-12-02T0200Z", exist_ok=True)
    f = await sftp.open("/upload/2026-12-02T0200Z/users.csv", "wb")
    await f.write(b"x" * 100_000)
    assert target.exists()
    conn.abort()  # the client vanishes mid-upload: no close ever comes
    await asyncio.to_thread(server.wait_event, "upload.failed")
    assert not target.exists()
    failed = [e for e in server.events("upload.failed")
              if e["path"] == "/upload/2026-12-02T0200Z/users.csv"]
    assert failed and failed[0]["reason"] == "session_ended"


@pytest.fixture(scope="module")
def full_disk_server(tmp_path_factory: pytest.TempPathFactory,
                     keys: Keys) -> Iterator[ServerProcess]:
    """A server whose root is a real 2 MiB tmpfs."""
    base = tmp_path_factory.mktemp("tmpfs")
    mount = base / "data"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"permission to mount a tmpfs ({done.stderr.strip()})")
    try:
        srv = start_server(mount, keys, base / "audit.jsonl")
        yield srv
        assert srv.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full(full_disk_server: ServerProcess, keys: Keys, tmp_path: Path) -> None:
    # Half the volume is taken already, so the upload runs out of space well before the file
    # size bound that the volume's size sets (which would refuse it as too large instead).
    (full_disk_server.root / "downloads/pad").write_bytes(b"\0" * (1024 * 1024))
    big = tmp_path / "big.csv"
    big.write_bytes(os.urandom(3 * 1024 * 1024 // 2))
    small = tmp_path / "small.csv"
    small.write_bytes(b"id\n1\n")
    result = openssh_sftp(full_disk_server, keys,
                          f"mkdir /upload/e\nput {big} /upload/e/big.csv\n")
    assert result.returncode != 0
    assert "upload failed" in result.stderr or "Failure" in result.stderr, result.stderr
    assert not (full_disk_server.root / "upload/e/big.csv").exists()
    assert full_disk_server.events("upload.failed")[-1]["reason"] == "disk_full"
    # The space is back and the server still serves.
    ok = openssh_sftp(full_disk_server, keys, f"put {small} /upload/e/small.csv\n")
    assert ok.returncode == 0, ok.stderr
    assert (full_disk_server.root / "upload/e/small.csv").read_bytes() == b"id\n1\n"
    assert full_disk_server.proc.poll() is None


@pytest.fixture
def limited_server(tmp_path: Path, keys: Keys) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl",
                       "--idle-timeout", "1.5", "--max-sessions", "2",
                       "--login-grace-time", "1")
    yield srv
    srv.stop()


async def test_limits(limited_server: ServerProcess, keys: Keys) -> None:
    srv = limited_server
    # Login grace time: a client that never authenticates is dropped.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        raw.sendall(b"SSH-2.0-probe\r\n")
        start = time.monotonic()
        while raw.recv(4096):
            pass
        assert time.monotonic() - start < 4
    # Max sessions: a third concurrent connection is refused.
    first, second = await connect(srv, keys), await connect(srv, keys)
    with pytest.raises((asyncssh.Error, ConnectionError)):
        third = await connect(srv, keys)
        third.close()
    # Idle timeout: both idle sessions are closed by the server.
    await asyncio.wait_for(asyncio.gather(first.wait_closed(), second.wait_closed()), 6)
    assert len(srv.events("connection.timed_out")) == 2
    assert any(e["reason"] == "too_many_sessions" for e in srv.events("connection.refused"))


async def test_slow_transfer_is_not_idle(limited_server: ServerProcess, keys: Keys) -> None:
    """Reads and writes count as activity: a transfer longer than the idle timeout survives."""
    chunk = os.urandom(4096)
    async with connect(limited_server, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("/upload/slow")
        async with sftp.open("/upload/slow/trickle.bin", "wb") as f:
            for _ in range(8):  # 8 x 0.3 s: well over the 1.5 s idle timeout, no path operation
                await f.write(chunk)
                await asyncio.sleep(0.3)
        async with sftp.open("/upload/slow/trickle.bin", "rb") as f:
            for _ in range(8):
                assert await f.read(len(chunk)) == chunk
                await asyncio.sleep(0.3)
    assert (limited_server.root / "upload/slow/trickle.bin").read_bytes() == chunk * 8
    assert limited_server.events("connection.timed_out") == []


async def test_sigterm_is_graceful(limited_server: ServerProcess, keys: Keys) -> None:
    conn = await connect(limited_server, keys)
    sftp = await conn.start_sftp_client()
    assert "upload" in await sftp.listdir("/")
    limited_server.proc.send_signal(15)
    code = await asyncio.to_thread(limited_server.proc.wait, 15)
    assert code == 0
    await asyncio.wait_for(conn.wait_closed(), 5)
    events = [e["event"] for e in limited_server.events()]
    assert events.index("server.stopping") < events.index("server.stopped")
