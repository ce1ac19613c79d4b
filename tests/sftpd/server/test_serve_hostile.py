"""A hostile district against a real `sftpd serve`: raw protocol requests that must stay bounded.

Each test drives the server with requests an ordinary client would not send (a huge READ, an
overlapping copy-data, a 1 TiB offset, hundreds of handles, processor names, modes that lock
the owner out, a directory swapped for a link) and checks the server's answer and the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import errno
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from sftpd.server import beneath
from sftpd.server.command import parse_size
from sftpd.server.filesystem import MAX_READ
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess, start_server

WRITE = asyncssh.FXF_WRITE
CREATE = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
READ = asyncssh.FXF_READ
NO_ATTRS = asyncssh.SFTPAttrs()


def connect(server: ServerProcess, keys: Keys) -> asyncssh.SSHClientConnection:
    return asyncssh.connect("127.0.0.1", server.port, username=LOGIN,  # type: ignore[return-value]
                            client_keys=[str(keys.client)], known_hosts=None, agent_path=None)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerProcess]:
    """A server with small per-session limits, so the tests reach them quickly."""
    base = tmp_path_factory.mktemp("limited")
    srv = start_server(base / "data", keys, base / "audit.jsonl",
                       "--max-open-handles", "8", "--max-file-size", "1M")
    yield srv
    assert srv.stop() == 0


def denied(server: ServerProcess, reason: str) -> list[dict[str, object]]:
    return [e for e in server.events("request.denied") if e.get("reason") == reason]


def failures_of(server: ServerProcess, path: str) -> list[dict[str, object]]:
    """The upload.failed events for path, waiting (bounded) for the first."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in server.events("upload.failed") if e["path"] == path]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no upload.failed for {path}")


# -- item 4: a READ is never longer than the server announces --------------------------------

async def test_read_length_is_capped(server: ServerProcess, keys: Keys) -> None:
    big = server.root / "downloads/big.bin"
    big.write_bytes(os.urandom(3 * MAX_READ))
    try:
        async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
            assert sftp.limits.max_read_len == MAX_READ
            handle = await sftp._handler.open(b"/downloads/big.bin", READ, NO_ATTRS)
            data, _ = await sftp._handler.read(handle, 0, 3 * MAX_READ)
            assert data == big.read_bytes()[:MAX_READ]  # a short read, as SFTP allows
            await sftp._handler.close(handle)
            # Ordinary reads still return the whole file, in announced-size pieces.
            async with sftp.open("/downloads/big.bin", "rb") as f:
                assert await f.read() == big.read_bytes()
    finally:
        big.unlink()


class StalledClient(asyncssh.SSHClientSession[bytes]):
    """A raw SFTP channel whose owner stops taking replies: its window stays shut."""

    def __init__(self) -> None:
        self.received = bytearray()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.received += data


def sftp_packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def sftp_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_unread_replies_do_not_pile_up(server: ServerProcess, keys: Keys) -> None:
    """Many READs from a client that never takes the replies: the server stops answering
    once a few are queued, instead of holding every reply in memory."""
    big = server.root / "downloads/stalled.bin"
    big.write_bytes(os.urandom(MAX_READ))
    requests = 150  # 600 MiB of replies if all were queued
    try:
        async with connect(server, keys) as conn:
            chan, session = await conn.create_session(StalledClient, subsystem="sftp",
                                                       encoding=None)
            chan.write(sftp_packet(1, struct.pack(">I", 3)))  # INIT
            chan.write(sftp_packet(3, struct.pack(">I", 1), sftp_string(b"/downloads/stalled.bin"),
                                   struct.pack(">II", READ, 0)))  # OPEN
            handle = await asyncio.to_thread(handle_from, session)
            before = rss_bytes(server.proc.pid)
            chan.pause_reading()
            for request in range(requests):
                chan.write(sftp_packet(5, struct.pack(">I", 100 + request), sftp_string(handle),
                                       struct.pack(">QI", 0, MAX_READ)))  # READ
            grown = await asyncio.to_thread(growth_of, server.proc.pid, before, 300 << 20)
            chan.close()
        assert grown < 64 << 20, f"server grew {grown >> 20} MiB"
        # And it still serves.
        async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
            assert "stalled.bin" in await sftp.listdir("/downloads")
    finally:
        big.unlink()


def handle_from(session: StalledClient) -> bytes:
    """The handle in the OPEN reply (after the VERSION reply), waiting (bounded) for it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = bytes(session.received)
        if len(data) >= 4:
            version_len = struct.unpack(">I", data[:4])[0]
            rest = data[4 + version_len:]
            if len(rest) >= 4 and len(rest) >= 4 + struct.unpack(">I", rest[:4])[0]:
                assert rest[4] == 102, "OPEN was refused"  # SSH_FXP_HANDLE
                length = struct.unpack(">I", rest[9:13])[0]
                return rest[13:13 + length]
        time.sleep(0.01)
    raise AssertionError("no OPEN reply")


def growth_of(pid: int, before: int, ceiling: int) -> int:
    """The largest growth of pid's RSS over a few seconds (stopping early past ceiling)."""
    grown = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and grown < ceiling:
        grown = max(grown, rss_bytes(pid) - before)
        time.sleep(0.05)
    return grown


# -- item 5: copy-data is bounded, refuses overlap, and lets other sessions run --------------

async def test_copy_data_refuses_overlap_and_copies(server: ServerProcess, keys: Keys) -> None:
    target = server.root / "upload/copy/a.bin"
    async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/copy", exist_ok=True)
        async with sftp.open("/upload/copy/a.bin", "wb") as f:
            await f.write(bytes(range(60)))
        h = await sftp._handler.open(b"/upload/copy/a.bin", READ | WRITE, NO_ATTRS)
        # Same handle, ranges [0, 60) and [30, 90) overlap: OpenSSH refuses this too.
        with pytest.raises(asyncssh.SFTPFailure, match="overlap"):
            await sftp._handler.copy_data(h, 0, 60, h, 30)
        with pytest.raises(asyncssh.SFTPFailure, match="overlap"):
            await sftp._handler.copy_data(h, 0, 0, h, 59)  # "to the end" that chases itself
        assert target.read_bytes() == bytes(range(60))
        # Not overlapping: copied, and "to the end" means the end when the copy began.
        await sftp._handler.copy_data(h, 0, 0, h, 60)
        await sftp._handler.close(h)
        assert target.read_bytes() == bytes(range(60)) * 2


async def test_copy_data_is_bounded_by_the_file_size_limit(limited: ServerProcess,
                                                           keys: Keys) -> None:
    target = limited.root / "upload/c/big.bin"
    async with connect(limited, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/c", exist_ok=True)
        async with sftp.open("/upload/c/big.bin", "wb") as f:
            await f.write(b"x" * 600_000)
        src = await sftp._handler.open(b"/upload/c/big.bin", READ, NO_ATTRS)
        dst = await sftp._handler.open(b"/upload/c/big.bin", WRITE, NO_ATTRS)
        with pytest.raises(asyncssh.SFTPFailure, match="size limit"):
            await sftp._handler.copy_data(src, 0, 0, dst, 600_000)  # would end at 1.2 MB
        await sftp._handler.close(src)
        await sftp._handler.close(dst)
    assert target.stat().st_size == 600_000


def wait_for_bytes(path: Path) -> None:
    while not path.exists() or path.stat().st_size == 0:
        time.sleep(0.001)


async def test_copy_data_does_not_stall_other_sessions(server: ServerProcess,
                                                       keys: Keys) -> None:
    """A long copy is served in pieces: a second session's request is answered in between.

    Ordering, not timing: how far the copy had got when the other answer came back is read
    from the disk, so a slow machine changes nothing but the numbers."""
    source = server.root / "upload/stall/source.bin"
    target = server.root / "upload/stall/target.bin"
    source.parent.mkdir(parents=True, exist_ok=True)
    total = 192 << 20
    with source.open("wb") as f:
        f.truncate(total)  # sparse: reading it costs no disk
    try:
        async with connect(server, keys) as conn, conn.start_sftp_client() as sftp, \
                connect(server, keys) as other, other.start_sftp_client() as sftp2:
            src = await sftp._handler.open(b"/upload/stall/source.bin", READ, NO_ATTRS)
            dst = await sftp._handler.open(b"/upload/stall/target.bin", CREATE, NO_ATTRS)
            copy = asyncio.create_task(sftp._handler.copy_data(src, 0, 0, dst, 0))
            await asyncio.to_thread(wait_for_bytes, target)
            await sftp2.stat("/upload")
            copied_when_answered = target.stat().st_size
            await copy
            assert target.stat().st_size == total
            assert copied_when_answered < total
    finally:
        source.unlink()
        target.unlink(missing_ok=True)


# -- item 8: handles per session are capped ----------------------------------------------------

async def test_open_handles_are_capped_per_session(limited: ServerProcess, keys: Keys) -> None:
    (limited.root / "downloads/f.txt").write_text("x")
    many = limited.root / "downloads/many"
    many.mkdir(exist_ok=True)
    for i in range(200):  # more than one READDIR reply holds
        (many / f"{i}.csv").touch()
    async with connect(limited, keys) as conn, conn.start_sftp_client() as sftp:
        handles = [await sftp._handler.open(b"/downloads/f.txt", READ, NO_ATTRS)
                   for _ in range(7)]
        listing = await sftp._handler.opendir(b"/downloads/many")
        await sftp._handler.readdir(listing)  # a listing half read holds a descriptor
        with pytest.raises(asyncssh.SFTPFailure, match="Too many open handles"):
            await sftp._handler.open(b"/downloads/f.txt", READ, NO_ATTRS)
        with pytest.raises(asyncssh.SFTPFailure, match="Too many open handles"):
            await sftp._handler.open(b"/upload/new.txt", CREATE, NO_ATTRS)
        assert not (limited.root / "upload/new.txt").exists()
        # Another session of the district is not affected.
        async with connect(limited, keys) as conn2, conn2.start_sftp_client() as sftp2, \
                sftp2.open("/downloads/f.txt") as f:
            assert await f.read() == "x"
        await sftp._handler.close(handles.pop())
        handles.append(await sftp._handler.open(b"/downloads/f.txt", READ, NO_ATTRS))
        for h in [*handles, listing]:
            await sftp._handler.close(h)
    assert denied(limited, "too_many_handles")


# -- item 15: offsets are bounded by the file size limit ---------------------------------------

async def test_sparse_offsets_are_refused(limited: ServerProcess, server: ServerProcess,
                                          keys: Keys) -> None:
    async with connect(limited, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/s", exist_ok=True)
        h = await sftp._handler.open(b"/upload/s/sparse.bin", CREATE, NO_ATTRS)
        await sftp._handler.write(h, 0, b"a" * 1000)
        with pytest.raises(asyncssh.SFTPFailure, match="size limit"):
            await sftp._handler.write(h, (1 << 20) - 10, b"b" * 100)  # ends past 1 MiB
        await sftp._handler.close(h)
        # The upload could not be finished, so it is undone like one that ran out of space.
        assert not (limited.root / "upload/s/sparse.bin").exists()
        async with sftp.open("/upload/s/ok.bin", "wb") as f:
            await f.write(b"c" * (1 << 20))  # exactly the limit is fine
        with pytest.raises(asyncssh.SFTPFailure, match="size limit"):
            await sftp.truncate("/upload/s/ok.bin", 1 << 40)
    assert (limited.root / "upload/s/ok.bin").stat().st_size == 1 << 20
    assert denied(limited, "file_size_limit")
    # The default bound (64 GiB) refuses a 1 TiB offset too.
    async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/s", exist_ok=True)
        h = await sftp._handler.open(b"/upload/s/tera.bin", CREATE, NO_ATTRS)
        with pytest.raises(asyncssh.SFTPFailure, match="size limit"):
            await sftp._handler.write(h, 1 << 40, b"x")
        await sftp._handler.close(h)
    assert not (server.root / "upload/s/tera.bin").exists()


# -- item 12: modes never lock the owner (the server and the processor) out --------------------

async def test_modes_keep_the_owner_in(server: ServerProcess, keys: Keys) -> None:
    epoch = server.root / "upload/modes"
    async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/modes/sub", exist_ok=True)
        async with sftp.open("/upload/modes/a.csv", "wb") as f:
            await f.write(b"id\n")
        await sftp.chmod("/upload/modes/a.csv", 0o000)
        assert stat.S_IMODE((epoch / "a.csv").stat().st_mode) == 0o600
        await sftp.chmod("/upload/modes/a.csv", 0o222)
        assert stat.S_IMODE((epoch / "a.csv").stat().st_mode) == 0o622
        await sftp.chmod("/upload/modes/sub", 0o000)
        assert stat.S_IMODE((epoch / "sub").stat().st_mode) == 0o700
        h = await sftp._handler.open(b"/upload/modes/b.csv", CREATE,
                                     asyncssh.SFTPAttrs(permissions=0o000))
        await sftp._handler.close(h)
        assert stat.S_IMODE((epoch / "b.csv").stat().st_mode) == 0o600
        # A mode left by someone else that nobody could read is still repaired over SFTP.
        (epoch / "a.csv").chmod(0o000)
        await sftp.chmod("/upload/modes/a.csv", 0o644)
        assert stat.S_IMODE((epoch / "a.csv").stat().st_mode) == 0o644
        async with sftp.open("/upload/modes/a.csv", "rb") as f:
            assert await f.read() == b"id\n"


# -- item 18: an interrupted resume gives back only what it added -------------------------------

async def test_interrupted_resume_keeps_the_file(server: ServerProcess, keys: Keys) -> None:
    target = server.root / "upload/resume/users.csv"
    complete = b"sourcedId\n" + b"1\n" * 5000
    async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("/upload/resume", exist_ok=True)
        async with sftp.open("/upload/resume/users.csv", "wb") as f:
            await f.write(complete)
    conn = await connect(server, keys)
    sftp = await conn.start_sftp_client()
    f = await sftp.open("/upload/resume/users.csv", "ab")  # a resume: no truncation
    await f.write(b"2\n" * 1000)
    assert target.stat().st_size > len(complete)
    conn.abort()  # cut off mid-resume
    failed = await asyncio.to_thread(failures_of, server, "/upload/resume/users.csv")
    assert failed[-1]["outcome"] == "restored"
    assert target.read_bytes() == complete


# -- items 1 and 11: the processor's names cannot be made over SFTP ----------------------------

async def test_processor_names_are_refused(server: ServerProcess, keys: Keys) -> None:
    upload = server.root / "upload"
    (upload / "names").mkdir(exist_ok=True)
    (upload / "names/users.csv").write_text("id\n")
    # A staging directory of the processor's, as it leaves one mid-gather.
    staging = upload / ".sftpd-gather-2026-01-01T000000Z"
    staging.mkdir(exist_ok=True)
    (staging / ".sftpd-gather-list").write_text("x.csv\n")
    before = {p: p.stat().st_mtime_ns for p in upload.rglob("*")}
    async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
        refused = {
            "mkdir staging": sftp.mkdir("/upload/.sftpd-gather-evil"),
            "file named like staging": sftp.open("/upload/.sftpd-gather-evil", "wb"),
            "staging deeper": sftp.mkdir("/upload/names/.sftpd-gather-x"),
            "rename to staging": sftp.rename("/upload/names", "/upload/.sftpd-gather-names"),
            # sftpd sif-pull's hidden build: its next run would remove it as a leftover.
            "mkdir pull build": sftp.mkdir("/upload/.sftpd-pull-20260101-000000"),
            "rename to pull build": sftp.rename("/upload/names",
                                                "/upload/.sftpd-pull-20260101-000001"),
            "write into staging": sftp.open(
                "/upload/.sftpd-gather-2026-01-01T000000Z/.sftpd-gather-list", "wb"),
            "add to staging": sftp.open("/upload/.sftpd-gather-2026-01-01T000000Z/y.csv", "wb"),
            "remove from staging": sftp.remove(
                "/upload/.sftpd-gather-2026-01-01T000000Z/.sftpd-gather-list"),
            "rename staging away": sftp.rename("/upload/.sftpd-gather-2026-01-01T000000Z",
                                               "/upload/mine"),
            "processor's temporary": sftp.open("/upload/names/processing.json.sftpd-writing",
                                               "wb"),
            "directory processing.log": sftp.mkdir("/upload/names/processing.log"),
            "directory processing.json": sftp.mkdir("/upload/names/processing.json"),
            "rename a directory to processing.log": sftp.rename(
                "/upload/names", "/upload/processing.log"),
        }
        outcomes = await asyncio.gather(*refused.values(), return_exceptions=True)
        for name, outcome in zip(refused, outcomes, strict=True):
            assert isinstance(outcome, asyncssh.SFTPPermissionDenied), (name, outcome)
            assert "Reserved name" in str(outcome), name
        assert {p: p.stat().st_mtime_ns for p in upload.rglob("*")} == before
        # A file named processing.log is data the processor replaces: still allowed.
        async with sftp.open("/upload/names/processing.log", "wb") as f:
            await f.write(b"old log\n")
        await sftp.remove("/upload/names/processing.log")
    assert len(denied(server, "reserved_name")) >= len(refused)


# -- item 16: a directory swapped for a link never leads a write out of the root ---------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_RENAME_EXCHANGE = 2


def flip(a: Path, b: Path, stop: threading.Event) -> int:
    """Swap a and b atomically, again and again, until stop: a local process racing the server."""
    flips = 0
    while not stop.is_set():
        if _libc.renameat2(-100, bytes(a), -100, bytes(b), _RENAME_EXCHANGE) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")
        flips += 1
    return flips


async def test_swapped_directory_does_not_lead_out(server: ServerProcess, keys: Keys,
                                                   tmp_path: Path) -> None:
    """The server checks a path, then uses it; a local process swaps an intermediate directory
    for a link to outside the root in between. The swap runs flat out in another thread while
    the district creates files through that directory: not one may land outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    epoch = server.root / "upload/swap"
    (epoch / "inner").mkdir(parents=True, exist_ok=True)
    (epoch / "other").symlink_to(outside)
    stop = threading.Event()
    async with connect(server, keys) as conn, conn.start_sftp_client() as sftp:
        flipper = asyncio.create_task(asyncio.to_thread(flip, epoch / "inner", epoch / "other",
                                                        stop))
        try:
            for round_ in range(6):
                opens = [sftp._handler.open(f"/upload/swap/inner/{round_}-{i}.csv".encode(),
                                            CREATE, NO_ATTRS) for i in range(150)]
                for outcome in await asyncio.gather(*opens, return_exceptions=True):
                    if isinstance(outcome, bytes):
                        await sftp._handler.close(outcome)
        finally:
            stop.set()
            flips = await flipper
    assert flips > 100
    assert sorted(outside.iterdir()) == []


def test_beneath_refuses_a_link_in_the_middle(tmp_path: Path) -> None:
    """Both ways of resolving beneath the root (openat2, and the walk for kernels before 5.6)
    refuse a link at any depth, and create nothing through it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a/b").mkdir(parents=True)
    outside.mkdir()
    (root / "a/link").symlink_to(outside)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = os.O_WRONLY | os.O_CREAT
        with pytest.raises(OSError) as raised:
            beneath.open_beneath(root_fd, b"a/link/x", flags, 0o644)
        assert raised.value.errno in (errno.ELOOP, errno.EXDEV)
        with pytest.raises(OSError) as raised:
            beneath._walk(root_fd, [b"a", b"link", b"x"], flags | os.O_NOFOLLOW, 0o644)
        assert raised.value.errno in (errno.ELOOP, errno.ENOTDIR)
        with pytest.raises(OSError):
            beneath.open_beneath(root_fd, b"a/../../outside/x", flags, 0o644)
        fd = beneath._walk(root_fd, [b"a", b"b", b"y"], flags | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    finally:
        os.close(root_fd)
    assert list(outside.iterdir()) == []
    assert (root / "a/b/y").exists()


@pytest.mark.parametrize(("text", "size"), [("1048576", 1 << 20), ("512M", 512 << 20),
                                            ("64G", 64 << 30), ("1TiB", 1 << 40), ("8k", 8192)])
def test_size_option(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "12X"])
def test_size_option_refuses_nonsense(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)
