"""Who gets in: key rotation, refused methods, allow-list, bans, and the ssh-audit verdict."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import asyncssh
import paramiko
import pytest

from sftpd.server.access import BanList, is_allowed, parse_networks
from tests.conftest import require_binary
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess, openssh_sftp


def paramiko_connect(server: ServerProcess, source: str = "127.0.0.1",
                     **auth: object) -> paramiko.Transport:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                    source_address=(source, 0))
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=10)
    if "pkey" in auth:
        transport.auth_publickey(LOGIN, auth["pkey"])  # type: ignore[arg-type]
    elif "password" in auth:
        transport.auth_password(LOGIN, str(auth["password"]))
    return transport


def test_key_rotation_without_restart(server: ServerProcess, keys: Keys) -> None:
    assert openssh_sftp(server, keys, "ls /\n").returncode == 0
    assert openssh_sftp(server, keys, "ls /\n", keys.other).returncode != 0
    # The kubelet swaps ..data: the old key goes, a new one comes, one line is garbage.
    keys.authorize(keys.other, extra="ssh-ed25519 not-base64!! broken@line\n")
    try:
        assert openssh_sftp(server, keys, "ls /\n", keys.other).returncode == 0
        assert openssh_sftp(server, keys, "ls /\n").returncode != 0
        bad = server.wait_event("authorized_keys.line_skipped")
        assert bad[-1]["line"] == 1
    finally:
        keys.authorize(keys.client)
    assert openssh_sftp(server, keys, "ls /\n").returncode == 0
    assert server.proc.poll() is None


def test_wrong_key_and_password_are_refused(server: ServerProcess, keys: Keys) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(keys.other))
    with pytest.raises(paramiko.AuthenticationException):
        paramiko_connect(server, pkey=other)
    with pytest.raises(paramiko.BadAuthenticationType) as exc:
        paramiko_connect(server, password="lincoln")
    assert exc.value.allowed_types == ["publickey"]
    failed = server.events("login.failed")
    assert any(e["reason"] == "unknown_key" and e["fingerprint"] == other.fingerprint
               for e in failed)


async def test_exec_shell_and_forwarding_are_refused(server: ServerProcess, keys: Keys) -> None:
    async with asyncssh.connect("127.0.0.1", server.port, username=LOGIN,
                                client_keys=[str(keys.client)], known_hosts=None,
                                agent_path=None) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("id", check=False)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(term_type="xterm")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", server.metrics_port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)


def test_openssh_exec_is_refused(server: ServerProcess, keys: Keys) -> None:
    from tests.sftpd.server.conftest import ssh_options

    result = subprocess.run(["ssh", *ssh_options(keys), "-p", str(server.port),
                             f"{LOGIN}@127.0.0.1", "cat /etc/passwd"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "root:" not in result.stdout


def test_allow_list(server: ServerProcess, keys: Keys) -> None:
    pkey = paramiko.Ed25519Key.from_private_key_file(str(keys.client))
    paramiko_connect(server, "127.0.0.1", pkey=pkey).close()
    with pytest.raises((paramiko.SSHException, EOFError, ConnectionError)):
        paramiko_connect(server, "127.0.0.2", pkey=pkey)
    # OpenSSH bound to the refused source address fails the same way.
    assert openssh_sftp(server, keys, "ls /\n", None, "-o", "BindAddress=127.0.0.2").returncode
    assert any(e["reason"] == "source_not_allowed" and e["source"] == "127.0.0.2"
               for e in server.events("connection.refused"))


def test_ban_after_repeated_failures(server: ServerProcess, keys: Keys) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(keys.other))
    good = paramiko.Ed25519Key.from_private_key_file(str(keys.client))
    for _ in range(4):
        with pytest.raises(paramiko.AuthenticationException):
            paramiko_connect(server, "127.0.0.3", pkey=other)
    server.wait_event("address.banned")
    # Banned: even the right key is refused from that address ...
    with pytest.raises((paramiko.SSHException, EOFError, ConnectionError)):
        paramiko_connect(server, "127.0.0.3", pkey=good)
    # ... while other addresses are unaffected.
    paramiko_connect(server, "127.0.0.1", pkey=good).close()
    assert any(e["reason"] == "banned" for e in server.events("connection.refused"))


def test_auth_attempts_per_connection_are_limited(server: ServerProcess, keys: Keys) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(str(keys.other))
    transport = paramiko_connect(server)
    tries = 0
    try:
        for _ in range(6):
            tries += 1
            with pytest.raises(paramiko.AuthenticationException):
                transport.auth_publickey(LOGIN, other)
    except (paramiko.SSHException, EOFError):
        pass
    finally:
        transport.close()
    assert tries <= 4  # --max-auth-tries 3: the connection is gone after the third failure


def test_metrics_endpoint(server: ServerProcess) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
        text = r.read().decode()
    for name in ("sftpd_open_sessions", "sftpd_bytes_received_total", "sftpd_bytes_sent_total",
                 "sftpd_auth_failures_total", "sftpd_operations_total", "sftpd_errors_total"):
        assert name in text
    logins = re.search(r"^sftpd_logins_total (\S+)$", text, re.M)
    assert logins and float(logins.group(1)) >= 1


def test_ssh_audit(server: ServerProcess) -> None:
    require_binary("ssh-audit")
    result = subprocess.run([sys.executable, "-m", "ssh_audit", "-j", "--skip-rate-test",
                             "-p", str(server.port), "127.0.0.1"],
                            capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    kex = [k["algorithm"] for k in report["kex"]]
    assert kex[0] == "mlkem768x25519-sha256"
    problems: list[tuple[str, str, str]] = []
    for section in ("kex", "key", "enc", "mac"):
        for alg in report[section]:
            notes = alg.get("notes", {})
            problems += [(section, alg["algorithm"], text) for text in notes.get("fail", [])]
            problems += [(section, alg["algorithm"], text) for text in notes.get("warn", [])]
    allowed = {("kex", "curve25519-sha256"), ("kex", "curve25519-sha256@libssh.org")}
    for section, alg, text in problems:
        assert (section, alg) in allowed and "post-quantum" in text, (section, alg, text)
    assert {alg for _, alg, _ in problems} == {a for _, a in allowed}
    assert not [k for k in report["key"] if k["algorithm"] == "ssh-rsa"]


def test_access_rules_units() -> None:
    nets = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert is_allowed("10.1.2.3", nets) and is_allowed("::ffff:192.0.2.7", nets)
    assert not is_allowed("192.0.2.8", nets) and not is_allowed("garbage", nets)
    assert is_allowed("203.0.113.1", ())
    with pytest.raises(ValueError, match="not an address"):
        parse_networks(["10.0.0.0/33"])
    now = [0.0]
    bans = BanList(3, window_seconds=60, ban_seconds=100, clock=lambda: now[0])
    assert not bans.record_failure("a") and not bans.record_failure("a")
    now[0] = 61  # the first two fall out of the window
    assert not bans.record_failure("a")
    assert not bans.record_failure("a") and bans.record_failure("a")
    assert bans.is_banned("a") and not bans.is_banned("b")
    now[0] = 200
    assert not bans.is_banned("a")
