"""The audit log of a real `sftpd serve`: sftpd's one event style, whatever names clients choose."""

from __future__ import annotations

import re

import asyncssh

from sftpd.events import EVENT_NAME
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess

# Characters Python's str.splitlines() (and many log readers) treat as line breaks, a quote
# and a newline: a file name a district's client may well send.
HOSTILE = "roster\u2028\u2029\u0085\"\n{\"event\":\"login.succeeded\"}.csv"


async def test_hostile_file_names_stay_inside_one_ascii_event(server: ServerProcess,
                                                              keys: Keys) -> None:
    async with asyncssh.connect("127.0.0.1", server.port, username=LOGIN,
                                client_keys=[str(keys.client)], known_hosts=None,
                                agent_path=None) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/2026-12-03T0200Z", exist_ok=True)
        async with sftp.open(f"/upload/2026-12-03T0200Z/{HOSTILE}", "wb") as f:
            await f.write(b"sourcedId\n1\n")
    closed = server.wait_event("file.closed")
    assert closed[-1]["path"] == f"/upload/2026-12-03T0200Z/{HOSTILE}"
    raw = server.log.read_bytes()
    assert raw.isascii() and b"\\u2028" in raw and b"\\u0085" in raw
    text = raw.decode()
    lines = text.split("\n")[:-1]
    assert text.splitlines() == lines  # no line break but the newline after each event
    events = server.events()
    assert len(events) == len(lines)
    assert [e["event"] for e in events].count("login.succeeded") == 1
    for event in events:
        assert list(event)[:2] == ["time", "event"], event
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"]), event
        assert EVENT_NAME.match(event["event"]), event
