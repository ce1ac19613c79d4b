"""`sftpd gateway` with real processes: OpenSSH, paramiko and lftp through it to two districts'
real servers; each login reaches only its own tree; the gateway's refusals; the real client in
the district server's audit log; routing changes without a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import asyncssh
import paramiko
import pytest

from tests.conftest import require_binary
from tests.sftpd.gateway.conftest import District, Setup
from tests.sftpd.server.conftest import ssh_options


def sftp(setup: Setup, district: District, batch: str, key: Path | None = None,
         login: str | None = None, source: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    require_binary("sftp")
    return subprocess.run(
        ["sftp", *ssh_options(district.keys, key), "-o", f"BindAddress={source}",
         "-P", str(setup.gateway.port), "-b", "-", f"{login or district.login}@127.0.0.1"],
        input=batch, capture_output=True, text=True, timeout=90)


def test_openssh_sftp_both_ways_each_district_its_own_tree(setup: Setup, tmp_path: Path) -> None:
    for district, other in ((setup.a, setup.b), (setup.b, setup.a)):
        body = os.urandom(3 << 20)
        local = tmp_path / f"{district.login}.bin"
        local.write_bytes(body)
        back = tmp_path / f"{district.login}.back"
        result = sftp(setup, district, f"mkdir /upload/e1\nput {local} /upload/e1/data.bin\n"
                                       f"get /upload/e1/data.bin {back}\n")
        assert result.returncode == 0, result.stderr
        assert (district.server.root / "upload" / "e1" / "data.bin").read_bytes() == body
        assert back.read_bytes() == body
        assert not (other.server.root / "upload" / "e1" / "data.bin").exists() or \
            (other.server.root / "upload" / "e1" / "data.bin").read_bytes() != body


def test_paramiko_through_the_gateway(setup: Setup, tmp_path: Path) -> None:
    body = os.urandom(1 << 20)
    transport = paramiko.Transport(socket.create_connection(("127.0.0.1", setup.gateway.port),
                                                            timeout=20))
    try:
        transport.connect(username=setup.b.login,
                          pkey=paramiko.Ed25519Key.from_private_key_file(str(setup.b.keys.client)))
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        with client.open("/upload/paramiko.bin", "wb") as f:
            f.write(body)
        with client.open("/upload/paramiko.bin", "rb") as f:
            assert f.read() == body
    finally:
        transport.close()
    assert (setup.b.server.root / "upload" / "paramiko.bin").read_bytes() == body


def test_lftp_through_the_gateway(setup: Setup, tmp_path: Path) -> None:
    if shutil.which("lftp") is None:
        pytest.skip("lftp is not installed")
    body = os.urandom(1 << 20)
    (tmp_path / "lftp.bin").write_bytes(body)
    connect = "ssh -a -x " + " ".join(ssh_options(setup.a.keys))
    script = (f'set sftp:connect-program "{connect}"; set net:max-retries 1; '
              f"open -u {setup.a.login}, sftp://127.0.0.1:{setup.gateway.port}; "
              f"put {tmp_path / 'lftp.bin'} -o /upload/lftp.bin; "
              f"get /upload/lftp.bin -o {tmp_path / 'lftp.back'}; bye")
    result = subprocess.run(["lftp", "-c", script], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    assert (setup.a.server.root / "upload" / "lftp.bin").read_bytes() == body
    assert (tmp_path / "lftp.back").read_bytes() == body


def test_a_key_with_b_login_is_refused(setup: Setup) -> None:
    result = sftp(setup, setup.a, "ls /\n", login=setup.b.login, source="127.0.0.11")
    assert result.returncode != 0
    failed = setup.gateway.wait_event("login.failed", {"source": "127.0.0.11"})
    assert failed["reason"] == "unknown_key"
    assert failed["fingerprint"] == setup.fingerprint(setup.a.keys.client)
    assert not [e for e in setup.b.server.events("login.succeeded")
                if e["source"] == "127.0.0.11"]


def test_real_client_address_reaches_the_district_server(setup: Setup) -> None:
    assert sftp(setup, setup.a, "ls /\n", source="127.0.0.7").returncode == 0
    records = [e for e in setup.a.server.events("login.succeeded") if e["source"] == "127.0.0.7"]
    assert records, setup.a.server.log.read_text()
    assert records[-1]["via"] == "127.0.0.1"
    assert records[-1]["fingerprint"] == setup.fingerprint(setup.a.keys.client)
    routed = setup.gateway.wait_event("login.succeeded", {"source": "127.0.0.7"})
    assert routed["district"] == "ns-applegrove/applegrove"


@pytest.mark.parametrize("change,reason", [
    ({"suspended": True}, "suspended"),
    ({"allowed_sources": ("127.0.0.99/32",)}, "source_not_allowed"),
])
def test_district_rules_are_enforced_at_the_gateway(setup: Setup, change: dict[str, object],
                                                     reason: str) -> None:
    source = "127.0.0.21" if reason == "suspended" else "127.0.0.22"
    setup.routes.publish([setup.a.entry(**change), setup.b.entry()])
    try:
        setup.gateway.wait_event("routes.loaded", timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the gateway polls the files twice a second
            result = sftp(setup, setup.a, "ls /\n", source=source)
            if result.returncode != 0:
                break
        assert result.returncode != 0
        assert setup.gateway.wait_event("login.failed", {"source": source})["reason"] == reason
        reached = len([e for e in setup.a.server.events() if e.get("source") == source])
        assert sftp(setup, setup.a, "ls /\n", source=source).returncode != 0
        # Refused at the gateway: the district's server never heard of this attempt.
        assert len([e for e in setup.a.server.events() if e.get("source") == source]) == reached
    finally:
        setup.routes.publish([setup.a.entry(), setup.b.entry()])
    wait_until_login(setup, setup.a, setup.a.keys.client)


def test_unknown_login_is_refused(setup: Setup) -> None:
    result = sftp(setup, setup.a, "ls /\n", login="nobody.example", source="127.0.0.23")
    assert result.returncode != 0
    assert setup.gateway.wait_event("login.failed",
                                    {"source": "127.0.0.23"})["reason"] == "unknown_user"


_POLL_SOURCES = iter(f"127.0.{n // 250 + 1}.{n % 250 + 1}" for n in range(10000))


def wait_until_login(setup: Setup, district: District, key: Path, seconds: float = 15) -> float:
    """Seconds until the key gets in; each attempt from a new address, so that the refusals
    while waiting do not add up to a ban at the gateway (--ban-after 3, per login and address)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if sftp(setup, district, "ls /\n", key=key, source=next(_POLL_SOURCES)).returncode == 0:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{key.name} did not get in within {seconds}s")


def test_a_new_key_works_within_seconds_without_restart(setup: Setup) -> None:
    new = setup.b.keys.other
    assert sftp(setup, setup.b, "ls /\n", key=new, source="127.0.0.38").returncode != 0
    pid = setup.gateway.proc.pid
    # What the operator does: the District's Secret (the backend's file) and the routing shard.
    setup.b.keys.authorize(setup.b.keys.client, new)
    setup.routes.publish([setup.a.entry(), setup.b.entry(setup.b.keys.client, new)])
    took = wait_until_login(setup, setup.b, new)
    assert took < 10
    assert setup.gateway.proc.pid == pid and setup.gateway.proc.poll() is None


def test_a_login_clash_is_refused(setup: Setup) -> None:
    twin = setup.b.entry(login=setup.a.login, namespace="elsewhere")
    setup.routes.publish([setup.a.entry(), setup.b.entry(), twin])
    try:
        clash = setup.gateway.wait_event("routes.login_clash", {"login": setup.a.login})
        assert clash["districts"] == ["elsewhere/lincoln", "ns-applegrove/applegrove"]
        assert sftp(setup, setup.a, "ls /\n", source="127.0.0.24").returncode != 0
        assert setup.gateway.wait_event("login.failed",
                                        {"source": "127.0.0.24"})["reason"] == "login_clash"
    finally:
        setup.routes.publish([setup.a.entry(), setup.b.entry()])
    wait_until_login(setup, setup.a, setup.a.keys.client)


def test_a_bad_shard_keeps_the_last_good_routes(setup: Setup) -> None:
    from district_contract import routes

    shard = setup.routes.directory / routes.shard_file(
        routes.shard_of(setup.a.login, setup.routes.shards))
    good = shard.read_bytes()
    shard.write_bytes(b'{"format": "district-sftp/routes/v1", "entries": [')
    try:
        refused = setup.gateway.wait_event("routes.shard_refused", {"file": shard.name})
        assert "not JSON" in refused["error"]
        assert sftp(setup, setup.a, "ls /\n").returncode == 0
    finally:
        shard.write_bytes(good)


async def test_shell_exec_and_forwarding_are_refused(setup: Setup) -> None:
    async with asyncssh.connect("127.0.0.1", setup.gateway.port, username=setup.a.login,
                                client_keys=[str(setup.a.keys.client)], known_hosts=None,
                                agent_path=None) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("id", check=False)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(term_type="xterm")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(subsystem="netconf")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", setup.a.server.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        async with conn.start_sftp_client() as client:  # the one thing allowed still works
            assert "upload" in await client.listdir("/")


def test_key_options_hold_through_the_gateway(setup: Setup, tmp_path: Path) -> None:
    """A read-only key stays read-only and a from= key works only from its address: the
    district server judges the key the gateway names as if the client had shown it."""
    b = setup.b
    read_only = f'command="internal-sftp -R" {b.keys.pub(b.keys.other)}'
    pinned = f'from="127.0.0.33" {b.keys.pub(b.keys.client)}'
    b.keys.authorized.publish({"authorized_keys": f"{read_only}\n{pinned}\n"})
    setup.routes.publish([setup.a.entry(), b.entry(authorized_keys=(read_only, pinned))])
    try:
        wait_until_login(setup, b, b.keys.other)
        (tmp_path / "x.bin").write_bytes(b"x")
        result = sftp(setup, b, f"put {tmp_path / 'x.bin'} /upload/ro.bin\n", key=b.keys.other)
        assert result.returncode != 0
        assert not (b.server.root / "upload" / "ro.bin").exists()
        assert sftp(setup, b, "ls /\n", source="127.0.0.33").returncode == 0
        assert sftp(setup, b, "ls /\n", source="127.0.0.34").returncode != 0
        assert setup.gateway.wait_event("login.failed",
                                        {"source": "127.0.0.34"})["reason"] == "unknown_key"
    finally:
        b.keys.authorize(b.keys.client)
        setup.routes.publish([setup.a.entry(), b.entry()])
    wait_until_login(setup, b, b.keys.client)


def test_scp_is_forwarded(setup: Setup, tmp_path: Path) -> None:
    require_binary("scp")
    body = os.urandom(256 << 10)
    (tmp_path / "scp.bin").write_bytes(body)
    for flag, name in (("-O", "legacy.bin"), ("-s", "sftp.bin")):  # scp exec, and scp over SFTP
        result = subprocess.run(
            ["scp", flag, *ssh_options(setup.a.keys), "-P", str(setup.gateway.port),
             str(tmp_path / "scp.bin"), f"{setup.a.login}@127.0.0.1:/upload/{name}"],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert (setup.a.server.root / "upload" / name).read_bytes() == body


def test_a_wrong_backend_host_key_is_refused(setup: Setup) -> None:
    setup.routes.publish([setup.a.entry(host_keys=(setup.b.keys.pub(setup.b.keys.host_ed25519),)),
                          setup.b.entry()])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sftp(setup, setup.a, "ls /\n", source="127.0.0.35").returncode != 0:
                break
        failed = setup.gateway.wait_event("backend.failed", {"source": "127.0.0.35"})
        assert failed["district"] == "ns-applegrove/applegrove"
        assert "host key" in failed["error"].lower()
    finally:
        setup.routes.publish([setup.a.entry(), setup.b.entry()])
    wait_until_login(setup, setup.a, setup.a.keys.client)


def test_bans_at_the_gateway_are_per_login_and_address(setup: Setup) -> None:
    hostile = "127.0.0.36"
    for _ in range(3):
        assert sftp(setup, setup.a, "ls /\n", key=setup.a.keys.other,
                    source=hostile).returncode != 0
    banned = setup.gateway.wait_event("address.banned", {"source": hostile})
    assert banned["user"] == setup.a.login
    assert sftp(setup, setup.a, "ls /\n", source=hostile).returncode != 0  # the right key too
    # The same address with another District's login, and A's login from elsewhere: still in.
    assert sftp(setup, setup.b, "ls /\n", source=hostile).returncode == 0
    assert sftp(setup, setup.a, "ls /\n", source="127.0.0.37").returncode == 0


def test_an_unreachable_district_server_fails_only_its_channel(setup: Setup) -> None:
    from tests.sftpd.server.conftest import free_port

    down = setup.a.entry(backend=f"127.0.0.1:{free_port()}")
    setup.routes.publish([down, setup.b.entry()])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sftp(setup, setup.a, "ls /\n", source="127.0.0.39").returncode != 0:
                break
        failed = setup.gateway.wait_event("backend.failed", {"source": "127.0.0.39"})
        assert failed["district"] == "ns-applegrove/applegrove"
        assert sftp(setup, setup.b, "ls /\n").returncode == 0  # everyone else is served
    finally:
        setup.routes.publish([setup.a.entry(), setup.b.entry()])
    wait_until_login(setup, setup.a, setup.a.keys.client)


def test_clients_learn_the_gateways_upcoming_host_key(setup: Setup, tmp_path: Path) -> None:
    """The gateway announces all its host keys after login, as sftpd serve does, so its key
    can be rotated with overlap: a client trusting the current key learns the next one."""
    from tests.sftpd.gateway.conftest import start_gateway
    from tests.sftpd.server.conftest import keygen

    upcoming = keygen(tmp_path / "gateway_host_ed25519_key_next")
    gateway = start_gateway(tmp_path, setup.routes.directory, setup.host_key, setup.gateway_key,
                            "--next-host-key", str(upcoming))
    try:
        known_hosts = tmp_path / "known_hosts"
        current = Path(f"{setup.host_key}.pub").read_text().split()[1]
        known_hosts.write_text(f"[127.0.0.1]:{gateway.port} ssh-ed25519 {current}\n")
        result = subprocess.run(
            ["sftp", "-i", str(setup.a.keys.client), "-o", "IdentitiesOnly=yes",
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={known_hosts}", "-o", "UpdateHostKeys=yes",
             "-P", str(gateway.port), "-b", "-", f"{setup.a.login}@127.0.0.1"],
            input="ls /\n", capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert Path(f"{upcoming}.pub").read_text().split()[1] in known_hosts.read_text()
    finally:
        assert gateway.stop() == 0


async def test_channels_per_connection_are_capped(setup: Setup) -> None:
    async with asyncssh.connect("127.0.0.1", setup.gateway.port, username=setup.a.login,
                                client_keys=[str(setup.a.keys.client)], known_hosts=None,
                                agent_path=None) as conn:
        clients = [await conn.start_sftp_client() for _ in range(10)]
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.start_sftp_client()
        assert "upload" in await clients[-1].listdir("/")
        for client in clients:
            client.exit()
    refused = setup.gateway.wait_event("channel.refused", {"user": setup.a.login})
    assert refused["open_channels"] == 10


def test_metrics_count_logins_and_refusals(setup: Setup) -> None:
    gw = setup.gateway
    logins = gw.metric("sftpd_gateway_logins_total") or 0
    unknown = gw.metric('sftpd_gateway_auth_failures_total{reason="unknown_user"}') or 0
    assert sftp(setup, setup.a, "ls /\n", source="127.0.0.41").returncode == 0
    assert sftp(setup, setup.a, "ls /\n", login="nobody.example", source="127.0.0.42"
                ).returncode != 0
    assert gw.metric("sftpd_gateway_logins_total") == logins + 1
    assert gw.metric('sftpd_gateway_auth_failures_total{reason="unknown_user"}') == unknown + 1
    assert gw.metric("sftpd_gateway_routes") == 2
    deadline = time.monotonic() + 15  # the clients have gone; the gateway notices soon
    while gw.metric("sftpd_gateway_open_connections") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gw.metric("sftpd_gateway_open_connections") == 0
    assert gw.metric("sftpd_open_sessions") is None  # the district server's are not here


async def test_a_client_with_no_channel_is_closed_after_the_idle_timeout(
        setup: Setup, tmp_path: Path) -> None:
    from tests.sftpd.gateway.conftest import start_gateway

    gateway = start_gateway(tmp_path, setup.routes.directory, setup.host_key, setup.gateway_key,
                            "--idle-timeout", "1")
    try:
        options = {"username": setup.a.login, "client_keys": [str(setup.a.keys.client)],
                   "known_hosts": None, "agent_path": None}
        async with asyncssh.connect("127.0.0.1", gateway.port, **options) as busy, \
                busy.start_sftp_client() as sftp_client:
            idle = await asyncssh.connect("127.0.0.1", gateway.port, **options)
            await asyncio.wait_for(idle.wait_closed(), 20)  # closed by the gateway
            assert "upload" in await sftp_client.listdir("/")  # a session in use stays
        gateway.wait_event("connection.timed_out", {"user": setup.a.login})
    finally:
        assert gateway.stop() == 0
