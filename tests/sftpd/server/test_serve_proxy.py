"""`sftpd serve --proxy-from --gateway-key`: the PROXY v2 header and the gateway key, trusted
only from the gateway's addresses, and the real client in every check and log line."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from sftpd.server import proxyheader
from tests.sftpd.server.conftest import (
    LOGIN,
    Keys,
    SecretVolume,
    ServerProcess,
    keygen,
    openssh_sftp,
    start_server,
)

GATEWAY = "127.0.0.1"  # the --proxy-from address: the test speaks as the gateway from it
ELSEWHERE = "127.0.0.2"  # any other source


@pytest.fixture(scope="module")
def gateway_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keygen(tmp_path_factory.mktemp("gw") / "gateway")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
            gateway_key: Path) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("proxied")
    srv = start_server(base / "data", keys, base / "audit.jsonl",
                       "--proxy-from", GATEWAY, "--gateway-key", f"{gateway_key}.pub",
                       "--allowed-source", "127.0.0.0/24", "--ban-after", "3",
                       "--ban-time", "300", "--max-auth-tries", "6")
    yield srv
    assert srv.stop() == 0


def fingerprint(keys: Keys, key: Path) -> str:
    return asyncssh.read_public_key(f"{key}.pub").get_fingerprint()


def connected(port: int, source: str, header: bytes | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    if header is not None:
        sock.sendall(header)
    return sock


def header_for(client: str, fp: str, port: int = 40000) -> bytes:
    return proxyheader.encode((client, port), ("127.0.0.1", 22), fp)


async def login(port: int, source: str, header: bytes | None, key: Path) -> list[str]:
    """Log in over a socket that starts with `header`; the root listing."""
    sock = connected(port, source, header)
    async with asyncssh.connect("127.0.0.1", sock=sock, username=LOGIN, client_keys=[str(key)],
                                known_hosts=None, agent_path=None, login_timeout=20) as conn, \
            conn.start_sftp_client() as sftp:
        return sorted(await sftp.listdir("/"))


async def test_gateway_login_names_the_real_client(backend: ServerProcess, keys: Keys,
                                                   gateway_key: Path) -> None:
    names = await login(backend.port, GATEWAY,
                        header_for("127.0.0.9", fingerprint(keys, keys.client), 41234),
                        gateway_key)
    assert "upload" in names
    record = backend.wait_event("login.succeeded")[-1]
    assert record["source"] == "127.0.0.9"
    assert record["port"] == 41234
    assert record["via"] == GATEWAY
    assert record["fingerprint"] == fingerprint(keys, keys.client)


async def test_gateway_key_stands_only_for_a_district_key(backend: ServerProcess, keys: Keys,
                                                          gateway_key: Path) -> None:
    # The header names a key the district has not authorized: refused at the backend too.
    with pytest.raises(asyncssh.PermissionDenied):
        await login(backend.port, GATEWAY, header_for("127.0.0.20", fingerprint(keys, keys.other)),
                    gateway_key)
    # A client key on a gateway connection is not the gateway key: refused.
    with pytest.raises(asyncssh.PermissionDenied):
        await login(backend.port, GATEWAY, header_for("127.0.0.20", fingerprint(keys, keys.client)),
                    keys.client)
    reasons = {e["reason"] for e in backend.events("login.failed") if e["source"] == "127.0.0.20"}
    assert reasons == {"unknown_key", "not_gateway_key"}


async def test_gateway_key_from_elsewhere_is_unknown(backend: ServerProcess, keys: Keys,
                                                     gateway_key: Path) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await login(backend.port, ELSEWHERE, None, gateway_key)
    failed = [e for e in backend.events("login.failed") if e["source"] == ELSEWHERE]
    assert failed[-1]["reason"] == "unknown_key"
    assert await login(backend.port, ELSEWHERE, None, keys.client)  # the district's own key


def test_proxy_header_from_elsewhere_is_bad_ssh(backend: ServerProcess, keys: Keys) -> None:
    sock = connected(backend.port, ELSEWHERE,
                     header_for("127.0.0.30", fingerprint(keys, keys.client)))
    transport = paramiko.Transport(sock)
    # The server's refusal surfaces as a protocol error, an EOF or a reset, by timing.
    with pytest.raises((paramiko.SSHException, EOFError, ConnectionError)):
        transport.start_client(timeout=10)
    transport.close()
    assert not any(e.get("source") == "127.0.0.30" for e in backend.events())
    assert openssh_sftp(backend, keys, "ls /\n", None, "-o", f"BindAddress={ELSEWHERE}"
                        ).returncode == 0


@pytest.mark.parametrize("header,reason", [
    (None, "proxy_header_missing"),  # silence: dropped after the header timeout (5 s)
    (b"SSH-2.0-OpenSSH_9.9\r\n", "proxy_header_invalid"),  # plain SSH from the gateway
    (b"PROXY TCP4 127.0.0.40 127.0.0.1 1 22\r\n", "proxy_header_invalid"),  # version 1
    (proxyheader.SIGNATURE + b"\x20\x11\x00\x00", "proxy_header_invalid"),  # LOCAL
    (proxyheader.SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "proxy_header_invalid"),  # UDP
    (proxyheader.SIGNATURE + b"\x21\x11\xff\xff", "proxy_header_invalid"),  # too long
])
def test_gateway_address_without_a_valid_header_is_dropped(
        backend: ServerProcess, keys: Keys, header: bytes | None, reason: str) -> None:
    before = len([e for e in backend.events("connection.refused") if e["reason"] == reason])
    sock = connected(backend.port, GATEWAY, header)
    sock.settimeout(20)
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(4096) == b""  # closed without a byte of SSH
    assert time.monotonic() - started < 15
    sock.close()
    if before == 0:  # the refusal log is throttled per reason and address
        found = [e for e in backend.wait_event("connection.refused")
                 if e["reason"] == reason]
        assert found, backend.events("connection.refused")
    assert backend.proc.poll() is None


async def test_ban_counts_the_real_client_not_the_gateway(backend: ServerProcess, keys: Keys,
                                                          gateway_key: Path) -> None:
    hostile = "127.0.0.50"
    for _ in range(3):
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
            await login(backend.port, GATEWAY, header_for(hostile, fingerprint(keys, keys.other)),
                        gateway_key)
    banned = backend.wait_event("address.banned")
    assert banned[-1]["source"] == hostile
    assert banned[-1]["via"] == GATEWAY
    with pytest.raises((asyncssh.DisconnectError, ConnectionError, OSError)):
        await login(backend.port, GATEWAY, header_for(hostile, fingerprint(keys, keys.client)),
                    gateway_key)
    # Everyone else behind the same gateway still gets in.
    assert await login(backend.port, GATEWAY,
                       header_for("127.0.0.51", fingerprint(keys, keys.client)), gateway_key)


async def test_allow_list_judges_the_real_client(backend: ServerProcess, keys: Keys,
                                                 gateway_key: Path) -> None:
    with pytest.raises((asyncssh.DisconnectError, ConnectionError, OSError)):
        await login(backend.port, GATEWAY,
                    header_for("198.51.100.7", fingerprint(keys, keys.client)), gateway_key)
    refused = [e for e in backend.events("connection.refused")
               if e.get("source") == "198.51.100.7"]
    assert refused and refused[-1]["reason"] == "source_not_allowed"


def test_header_parser_bounds() -> None:
    good = header_for("2001:db8::5", "SHA256:abc", 7)
    client, length = proxyheader.parse(good + b"SSH-2.0-x\r\n", "gw") or (None, 0)
    assert client == proxyheader.ProxiedClient("2001:db8::5", 7, "gw", "SHA256:abc")
    assert length == len(good)
    for cut in range(len(good)):
        assert proxyheader.parse(good[:cut], "gw") is None
    with pytest.raises(proxyheader.ProxyHeaderError):
        proxyheader.parse(b"SSH-2.0-OpenSSH\r\n", "gw")
    bad_tlv = bytearray(header_for("127.0.0.1", "SHA256:abc"))
    bad_tlv[-11] = 0x7F  # the TLV's length runs past the header
    with pytest.raises(proxyheader.ProxyHeaderError):
        proxyheader.parse(bytes(bad_tlv), "gw")
    with pytest.raises(proxyheader.ProxyHeaderError):
        proxyheader.parse(header_for("127.0.0.1", "MD5:ab:cd"), "gw")


def test_header_parser_refuses_garbage_cleanly() -> None:
    """Random and mutated headers: a ProxiedClient, None (more bytes needed) or
    ProxyHeaderError, never anything else, and never a header longer than the limit."""
    import random

    rng = random.Random(19)
    good = header_for("127.0.0.1", "SHA256:" + "a" * 43)
    for _ in range(20000):
        data = bytearray(good if rng.random() < 0.7 else rng.randbytes(rng.randrange(64)))
        for _ in range(rng.randrange(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            parsed = proxyheader.parse(bytes(data), "gw")
        except proxyheader.ProxyHeaderError:
            continue
        if parsed is not None:
            assert parsed[1] <= proxyheader.MAX_HEADER


async def test_gateway_key_is_reread_from_its_secret_volume(
        tmp_path: Path, keys: Keys) -> None:
    """In a pod the gateway key sits in the authorized-keys volume (the operator writes it
    there): absent at start, then published, then replaced, each taken without a restart."""
    first, second = keygen(tmp_path / "gw1"), keygen(tmp_path / "gw2")
    volume = SecretVolume(tmp_path / "volume")
    volume.publish({"authorized_keys": keys.pub(keys.client) + "\n"})
    srv = start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl",
                       "--proxy-from", GATEWAY, "--gateway-key",
                       str(volume.directory / "gateway_key.pub"))
    try:
        srv.wait_event("gateway_key.missing")
        header = header_for("127.0.0.40", fingerprint(keys, keys.client))
        with pytest.raises(asyncssh.PermissionDenied):
            await login(srv.port, GATEWAY, header, first)
        volume.publish({"authorized_keys": keys.pub(keys.client) + "\n",
                        "gateway_key.pub": keys.pub(first) + "\n"})
        assert "upload" in await login(srv.port, GATEWAY, header, first)
        volume.publish({"authorized_keys": keys.pub(keys.client) + "\n",
                        "gateway_key.pub": keys.pub(second) + "\n"})
        assert "upload" in await login(srv.port, GATEWAY, header, second)
        with pytest.raises(asyncssh.PermissionDenied):
            await login(srv.port, GATEWAY, header, first)
        loaded = srv.events("gateway_key.loaded")
        assert [e["fingerprint"] for e in loaded] == [fingerprint(keys, first),
                                                      fingerprint(keys, second)]
    finally:
        assert srv.stop() == 0


def test_a_gateway_key_file_that_is_no_key_stops_the_start(tmp_path: Path, keys: Keys) -> None:
    bad = tmp_path / "gateway_key.pub"
    bad.write_text("not a key\n")
    with pytest.raises(AssertionError, match="gateway key"):
        start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl",
                     "--proxy-from", GATEWAY, "--gateway-key", str(bad))


def test_a_tcp_health_check_from_a_proxy_address_is_not_a_refusal(tmp_path: Path,
                                                                   keys: Keys) -> None:
    """The kubelet's tcpSocket readiness probe connects and closes without a byte, often from
    an address inside --proxy-from (the node's, on the pod network): no log line each time.
    A connection that starts a header and stops is still refused and logged."""
    srv = start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl",
                       "--proxy-from", GATEWAY)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10,
                                          source_address=(GATEWAY, 0)) as sock:
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(10) == b""  # the server closed its side too
        assert not srv.events("connection.refused")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10,
                                      source_address=(GATEWAY, 0)) as sock:
            sock.sendall(b"\r\n\r\n")  # the start of the PROXY v2 signature, then nothing
            sock.shutdown(socket.SHUT_WR)
            sock.recv(10)
        refused = srv.wait_event("connection.refused")
        assert [e["reason"] for e in refused] == ["proxy_header_missing"]
    finally:
        assert srv.stop() == 0
