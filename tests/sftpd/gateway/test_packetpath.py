"""The gateway's per-packet shortcuts on a real asyncssh connection through the real gateway:
packet logging skipped only while asyncssh would not log packets, and a connection whose input
is parsed in small pieces still carries every byte."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import asyncssh
import pytest

from sftpd.gateway import packetpath
from tests.sftpd.gateway.conftest import Setup


def connect(setup: Setup) -> Any:
    return asyncssh.connect("127.0.0.1", setup.gateway.port, username=setup.a.login,
                            client_keys=[str(setup.a.keys.client)], known_hosts=None,
                            agent_path=None)


async def test_packet_logging_is_skipped_only_while_off(setup: Setup) -> None:
    async with connect(setup) as conn:
        asyncssh.set_debug_level(3)
        try:
            packetpath.skip_packet_logging(conn)
            assert "log_sent_packet" not in vars(conn)  # packets are being logged: kept
        finally:
            asyncssh.set_debug_level(1)
        packetpath.skip_packet_logging(conn)
        assert vars(conn)["log_sent_packet"] is packetpath._not_logged
        assert vars(conn)["log_received_packet"] is packetpath._not_logged
        async with conn.start_sftp_client() as sftp:
            assert "upload" in await sftp.listdir("/")


async def test_input_parsed_in_small_pieces_keeps_every_byte(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces far smaller than a packet (and not a divisor of it): each packet is put together
    from several, across reads."""
    monkeypatch.setattr(packetpath, "PIECE", 1000)
    body = os.urandom(4 << 20)
    async with connect(setup) as conn:
        packetpath.receive_in_pieces(conn)
        async with conn.start_sftp_client() as sftp:
            async with sftp.open("/upload/pieces.bin", "wb") as f:
                await f.write(body)
            async with sftp.open("/upload/pieces.bin", "rb") as f:
                back = await f.read()
    assert hashlib.sha256(back).digest() == hashlib.sha256(body).digest()
