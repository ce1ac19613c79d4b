"""The audit log keeps one event per line and tells every name apart, whatever is uploaded."""

from __future__ import annotations

import io
import json

import asyncssh

from sftpd.server.audit import AuditLog
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess

# U+2028/U+2029 and U+0085 end a line for many log readers (Python's str.splitlines, JavaScript);
# U+202E reverses what a terminal shows.
SEPARATORS = "a\u2028b\u2029c\u0085d\u202ee.csv"
NOT_UTF8 = (b"r\xe9sum\xe9.csv", b"r\xe8sum\xe8.csv")  # Latin-1 and another: both invalid UTF-8


async def test_names_cannot_split_or_merge_audit_lines(server: ServerProcess,
                                                       keys: Keys) -> None:
    async with asyncssh.connect("127.0.0.1", server.port, username=LOGIN,
                                client_keys=[str(keys.client)], known_hosts=None,
                                agent_path=None) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("/upload/names")
        for name in (SEPARATORS.encode(), *NOT_UTF8):
            async with sftp.open(b"/upload/names/" + name, "wb") as f:
                await f.write(b"id\n1\n")
    raw = server.log.read_bytes()
    for char in ("\u2028", "\u2029", "\u0085", "\u202e"):
        assert char.encode() not in raw, f"U+{ord(char):04X} written raw"
    text = raw.decode()
    # One event per line by every reading of "line", each a JSON object.
    assert text.splitlines() == text.split("\n")[:-1]
    records = [json.loads(line) for line in text.split("\n")[:-1]]
    closes = [r for r in records if r["event"] == "file.closed" and "/names/" in r["path"]]
    assert closes[0]["path"] == "/upload/names/" + SEPARATORS
    # The two names that are not UTF-8 read alike, but their bytes are kept apart.
    odd = [r for r in closes if "path_hex" in r]
    assert len(odd) == 2
    assert {bytes.fromhex(r["path_hex"]) for r in odd} == {b"/upload/names/" + n
                                                           for n in NOT_UTF8}
    assert all("\ufffd" in r["path"] for r in odd)
    assert server.proc.poll() is None


def test_every_field_is_escaped() -> None:
    out = io.StringIO()
    AuditLog(out).event("file.closed", nested={"k": "\u2028"}, listed=["\x85"], plain="caf\u00e9")
    line = out.getvalue()
    assert line.count("\n") == 1 and line.splitlines() == [line[:-1]]
    assert line.isascii() and "caf\\u00e9" in line  # sftpd's one style: ASCII, escaped
    record = json.loads(line)
    assert record["nested"] == {"k": "\u2028"} and record["listed"] == ["\x85"]
    assert record["plain"] == "caf\u00e9"
