"""The gateway's channel pump with real processes: large files both ways byte for byte, a client
that stops reading holds the district server back instead of filling the gateway, EOF from the
client and exit status and stderr from the district server passed through."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import subprocess
import time
from pathlib import Path

import asyncssh

from tests.conftest import require_binary
from tests.sftpd.gateway.conftest import Setup
from tests.sftpd.server.conftest import ssh_options

# SFTP (draft-ietf-secsh-filexfer-02) packet types used here.
FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_READ, FXP_HANDLE, FXP_DATA = 1, 2, 3, 5, 102, 103
FXF_READ = 1


def sftp_packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


async def read_reply(stdout: asyncssh.SSHReader[bytes]) -> tuple[int, bytes]:
    (length,) = struct.unpack(">I", await stdout.readexactly(4))
    body = await stdout.readexactly(length)
    return body[0], body[1:]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def until_quiet(pid: int, grown_kib: int, baseline: int, seconds: float = 60) -> int:
    """Wait until the process has used no CPU for a second (the pipeline stalled or drained),
    or its memory grew by more than grown_kib; its VmRSS then."""
    deadline = time.monotonic() + seconds
    ticks = cpu_ticks(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        rss = rss_kib(pid)
        if rss - baseline > grown_kib:
            return rss
        now = cpu_ticks(pid)
        if now == ticks:
            return rss
        ticks = now
    raise AssertionError("the gateway never went quiet")


def test_large_files_both_ways_byte_for_byte(setup: Setup, tmp_path: Path) -> None:
    """OpenSSH sftp through the gateway, 48 MiB up and back: the pump regroups the bytes into
    packets of its own, so every byte must still arrive once, in order."""
    require_binary("sftp")
    a = setup.a
    body = os.urandom(48 << 20)
    local, back = tmp_path / "big.bin", tmp_path / "big.back"
    local.write_bytes(body)
    result = subprocess.run(
        ["sftp", *ssh_options(a.keys), "-P", str(setup.gateway.port), "-b", "-",
         f"{a.login}@127.0.0.1"],
        input=f"put {local} /upload/pump-big.bin\nget /upload/pump-big.bin {back}\n",
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(body).hexdigest()
    assert hashlib.sha256((a.server.root / "upload" / "pump-big.bin").read_bytes()).hexdigest() \
        == digest
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest


async def test_a_client_that_stops_reading_holds_the_server_back(setup: Setup) -> None:
    """A client asks for 96 MiB and reads none of it: the gateway must stop taking data from
    the district server once the client's window is full (its memory stays within a few
    windows), and the client still gets all 96 MiB once it reads."""
    a = setup.a
    big = a.server.root / "upload" / "pump-sparse.bin"
    with big.open("wb") as f:
        f.truncate(256 << 20)  # sparse: the district server reads it at memory speed
    requests, size = 3072, 32768
    gateway_pid = setup.gateway.proc.pid
    async with asyncssh.connect("127.0.0.1", setup.gateway.port, username=a.login,
                                client_keys=[str(a.keys.client)], known_hosts=None,
                                agent_path=None) as conn:
        process = await conn.create_process(subsystem="sftp", encoding=None)
        process.stdin.write(sftp_packet(FXP_INIT, struct.pack(">I", 3)))
        assert (await read_reply(process.stdout))[0] == FXP_VERSION
        process.stdin.write(sftp_packet(FXP_OPEN, struct.pack(">I", 1),
                                        string(b"/upload/pump-sparse.bin"),
                                        struct.pack(">II", FXF_READ, 0)))
        kind, reply = await read_reply(process.stdout)
        assert kind == FXP_HANDLE, reply
        handle = reply[4:]  # after the request id; a length-prefixed string
        baseline = rss_kib(gateway_pid)
        for n in range(requests):
            process.stdin.write(sftp_packet(FXP_READ, struct.pack(">I", 2 + n), handle,
                                            struct.pack(">QI", n * size, size)))
        await process.stdin.drain()
        held = await until_quiet(gateway_pid, 48 << 10, baseline)
        assert held - baseline < 24 << 10, \
            f"the gateway grew by {(held - baseline) >> 10} MiB for a client that reads nothing"
        received = 0
        for _ in range(requests):
            kind, reply = await asyncio.wait_for(read_reply(process.stdout), 60)
            assert kind == FXP_DATA, reply[:64]
            received += len(reply) - 8  # request id, data length
        assert received == requests * size
        process.stdin.write_eof()
        await asyncio.wait_for(process.wait_closed(), 30)
    big.unlink()


async def test_eof_from_the_client_reaches_the_server_after_its_data(setup: Setup) -> None:
    """The SFTP INIT and the client's EOF in one go: the district server must get the INIT
    first (its VERSION comes back), then the EOF, which ends its session: exit status 0 and
    the channel closed, passed back through the gateway."""
    a = setup.a
    async with asyncssh.connect("127.0.0.1", setup.gateway.port, username=a.login,
                                client_keys=[str(a.keys.client)], known_hosts=None,
                                agent_path=None) as conn:
        process = await conn.create_process(subsystem="sftp", encoding=None)
        process.stdin.write(sftp_packet(FXP_INIT, struct.pack(">I", 3)))
        process.stdin.write_eof()
        kind, _ = await asyncio.wait_for(read_reply(process.stdout), 30)
        assert kind == FXP_VERSION
        await asyncio.wait_for(process.wait_closed(), 30)
        assert process.exit_status == 0


async def test_exit_status_and_stderr_come_back_as_from_the_server(setup: Setup) -> None:
    """An scp command the district server refuses: its exit status and what it writes on
    stdout and stderr arrive through the gateway as they do straight from it."""
    a = setup.a
    results = []
    for port, source in ((setup.gateway.port, "127.0.0.1"), (a.server.port, "127.0.0.2")):
        async with asyncssh.connect("127.0.0.1", port, username=a.login,
                                    client_keys=[str(a.keys.client)], known_hosts=None,
                                    agent_path=None, local_addr=(source, 0)) as conn:
            result = await asyncio.wait_for(
                conn.run("scp -f -x /upload/not-there.bin", encoding=None), 30)
            results.append((result.exit_status, result.stdout, result.stderr))
    through, direct = results
    assert through == direct
    assert through[0] not in (0, None)
    assert through[1] or through[2]  # the server said why
