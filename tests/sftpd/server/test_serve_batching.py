"""Write batching (sftpd/server/batching.py) on a real server: nothing lost, nothing reordered."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.sftpd.server.conftest import (
    LOGIN,
    Keys,
    ServerProcess,
    keygen,
    openssh_sftp,
    start_server,
)


@pytest.fixture
def strict_server(tmp_path: Path, keys: Keys) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl", "--max-auth-tries", "1")
    yield srv
    srv.stop()


async def test_goodbye_is_sent_before_the_connection_closes(strict_server: ServerProcess,
                                                            tmp_path: Path) -> None:
    """The disconnect is queued and the transport aborted in the same loop turn: the batched
    write must still reach the client, which then sees the server's reason, not a lost link."""
    wrong = [str(keygen(tmp_path / f"wrong{i}")) for i in range(2)]
    with pytest.raises(asyncssh.PermissionDenied, match="Too many authentication failures"):
        await asyncssh.connect("127.0.0.1", strict_server.port, username=LOGIN,
                               client_keys=wrong, known_hosts=None, agent_path=None)


def test_large_transfer_round_trip(strict_server: ServerProcess, keys: Keys,
                                   tmp_path: Path) -> None:
    """Many packets per loop turn both ways (a whole channel window on download)."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 * 1024 * 1024 + 12345))
    back = tmp_path / "back.bin"
    done = openssh_sftp(strict_server, keys, f"mkdir /upload/b\nput {source} /upload/b/big.bin\n"
                                             f"get /upload/b/big.bin {back}\n")
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    assert (strict_server.root / "upload/b/big.bin").stat().st_size == source.stat().st_size


async def test_no_ignore_packet_before_each_packet(strict_server: ServerProcess, keys: Keys,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """asyncssh would send an SSH_MSG_IGNORE ahead of every encrypted packet; sftpd sends none.
    Counted on the client's side from what it logs receiving, over a login and a 256 KiB upload
    and download (eight or more data packets each way)."""
    payload = os.urandom(256 * 1024)
    asyncssh.set_debug_level(3)
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncssh"):
            async with asyncssh.connect("127.0.0.1", strict_server.port, username=LOGIN,
                                        client_keys=[str(keys.client)], known_hosts=None,
                                        agent_path=None) as conn, \
                    conn.start_sftp_client() as sftp:
                await sftp.mkdir("/upload/ign")
                async with sftp.open("/upload/ign/one.bin", "wb") as f:
                    await f.write(payload)
                async with sftp.open("/upload/ign/one.bin", "rb") as f:
                    back = await f.read()
    finally:
        asyncssh.set_debug_level(1)
    assert back == payload
    # asyncssh logs each packet as "[conn=N, pktid=M] Received MSG_NAME (number), K bytes".
    received = [m for m in (r.getMessage() for r in caplog.records) if "] Received MSG_" in m]
    assert sum("MSG_CHANNEL_DATA" in m for m in received) >= 8, received[:20]
    assert not [m for m in received if "MSG_IGNORE" in m]
