"""Which keys log in: authorized_keys options honoured or refused, weak keys and SHA-1 refused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from district_contract.keyoptions import judge_options, parse_expiry, split_options

from tests.sftpd.server.conftest import (
    LOGIN,
    Keys,
    ServerProcess,
    keygen,
    openssh_sftp,
    snapshot,
    ssh_options,
    start_server,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("rules")
    srv = start_server(base / "data", keys, base / "audit.jsonl", "--ban-after", "0",
                       "--max-auth-tries", "20")
    (srv.root / "downloads" / "report.csv").write_text("id\n1\n")
    (srv.root / "upload" / "e1").mkdir()
    (srv.root / "upload" / "e1" / "a.csv").write_text("id\n1\n")
    yield srv
    keys.authorize(keys.client)
    assert srv.stop() == 0


@pytest.fixture
def restore(keys: Keys) -> Iterator[None]:
    yield
    keys.authorize(keys.client)


def can_log_in(server: ServerProcess, keys: Keys, key: Path | None = None, *extra: str) -> bool:
    return openssh_sftp(server, keys, "ls /\n", key, *extra).returncode == 0


def publish(keys: Keys, *lines: str) -> None:
    keys.authorized.publish({"authorized_keys": "".join(line + "\n" for line in lines)})


def test_expiry_time(server: ServerProcess, keys: Keys, restore: None) -> None:
    publish(keys, f'expiry-time="20200101" {keys.pub(keys.client)}',
            f'expiry-time="29991231235959Z" {keys.pub(keys.other)}')
    assert not can_log_in(server, keys)
    assert any(e["reason"] == "key_expired" for e in server.events("login.failed"))
    assert can_log_in(server, keys, keys.other)


def test_expired_line_does_not_hide_a_later_valid_one(server: ServerProcess, keys: Keys,
                                                     restore: None) -> None:
    publish(keys, f'expiry-time="202001010000" {keys.pub(keys.client)}',
            f'no-pty {keys.pub(keys.client)}')
    assert can_log_in(server, keys)


async def test_read_only_key(server: ServerProcess, keys: Keys, restore: None) -> None:
    publish(keys, f'restrict,command="internal-sftp -R" {keys.pub(keys.client)}')
    before = snapshot(server.root)
    async with asyncssh.connect("127.0.0.1", server.port, username=LOGIN,
                                client_keys=[str(keys.client)], known_hosts=None,
                                agent_path=None) as conn, conn.start_sftp_client() as sftp:
        assert "upload" in await sftp.listdir("/")
        async with sftp.open("/downloads/report.csv", "rb") as f:
            assert await f.read() == b"id\n1\n"
        attempts = {
            "open for write": sftp.open("/upload/e1/new.csv", "wb"),
            "overwrite": sftp.open("/upload/e1/a.csv", "r+b"),
            "mkdir": sftp.mkdir("/upload/e2"),
            "rmdir": sftp.rmdir("/upload/e1"),
            "remove": sftp.remove("/upload/e1/a.csv"),
            "rename": sftp.rename("/upload/e1/a.csv", "/upload/e1/b.csv"),
            "posix-rename": sftp.posix_rename("/upload/e1/a.csv", "/upload/e1/b.csv"),
            "chmod": sftp.chmod("/upload/e1/a.csv", 0o600),
            "truncate": sftp.truncate("/upload/e1/a.csv", 0),
            "utime": sftp.utime("/upload/e1/a.csv", (0, 0)),
        }
        for what, attempt in attempts.items():
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await attempt
                pytest.fail(what)
    assert snapshot(server.root) == before
    assert server.events("login.succeeded")[-1].get("read_only") is True
    assert any(e.get("reason") == "read_only_key" for e in server.events("request.denied"))


def test_read_only_key_with_openssh_clients(server: ServerProcess, keys: Keys,
                                            restore: None) -> None:
    publish(keys, f'command="internal-sftp -R" {keys.pub(keys.client)}')
    before = snapshot(server.root)
    assert can_log_in(server, keys)
    # The real OpenSSH clients are refused the same way: sftp, and scp in both protocols.
    source = keys.client.with_suffix(".pub")
    put = openssh_sftp(server, keys, f"put {source} /upload/e1/k\n")
    assert put.returncode != 0
    for legacy in ([], ["-O"]):
        scp = subprocess.run(["scp", *legacy, *ssh_options(keys), "-P", str(server.port),
                              str(source), f"{LOGIN}@127.0.0.1:/upload/e1/k"],
                             capture_output=True, text=True, timeout=60)
        assert scp.returncode != 0, (legacy, scp.stderr)
    assert snapshot(server.root) == before


async def test_plain_sftp_command_and_restrictions_are_honoured(
        server: ServerProcess, keys: Keys, restore: None) -> None:
    publish(keys, f'restrict,no-pty,no-port-forwarding,command="internal-sftp",'
                  f'from="127.0.0.1" {keys.pub(keys.client)}')
    result = openssh_sftp(server, keys, "mkdir /upload/rw\nrmdir /upload/rw\n")
    assert result.returncode == 0, result.stderr


def test_from_elsewhere_is_refused(server: ServerProcess, keys: Keys, restore: None) -> None:
    publish(keys, f'from="10.9.9.9" {keys.pub(keys.client)}')
    assert not can_log_in(server, keys)


@pytest.mark.parametrize("option", [
    'command="/bin/sh -c id"',
    'restrict,command="internal-sftp -d /downloads"',
    'permitopen="127.0.0.1:5432"',
    'permitlisten="0.0.0.0:8080"',
    'tunnel="0"',
    'environment="LD_PRELOAD=/tmp/x.so"',
    'principals="lincoln"',
    "cert-authority",
    "restrict,pty",
    "no-touch-required",
    "verify-required",
])
def test_options_not_honoured_are_refused_loudly(server: ServerProcess, keys: Keys,
                                                 restore: None, option: str) -> None:
    publish(keys, f"{option} {keys.pub(keys.client)}", keys.pub(keys.other))
    assert not can_log_in(server, keys)
    refused = server.wait_event("authorized_keys.refused_option")[-1]
    assert refused["line"] == 1
    assert "not honoured" in refused["error"]
    assert refused["fingerprint"].startswith("SHA256:")
    # The other lines keep working.
    assert can_log_in(server, keys, keys.other)


def test_weak_rsa_and_dsa_keys_are_dropped(server: ServerProcess, keys: Keys, restore: None,
                                           tmp_path: Path) -> None:
    rsa1024 = tmp_path / "rsa1024"
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "rsa", "-b", "1024", "-f",
                    str(rsa1024)], check=True)
    dsa = keygen(tmp_path / "dsa", "dsa")
    publish(keys, keys.pub(rsa1024), keys.pub(dsa), keys.pub(keys.client))
    # Real OpenSSH clients, told to offer these keys, are refused.
    assert not can_log_in(server, keys, rsa1024, "-o", "PubkeyAcceptedAlgorithms=+ssh-rsa")
    assert not can_log_in(server, keys, dsa, "-o", "PubkeyAcceptedAlgorithms=+ssh-dss")
    assert can_log_in(server, keys)
    # The file is read at the first login attempt after it changed: both lines named, once.
    weak = server.wait_event("authorized_keys.weak_key", count=2)
    assert {e["line"] for e in weak[-2:]} == {1, 2}
    assert any("1024 bits" in e["error"] for e in weak)
    assert any("DSA" in e["error"] for e in weak)


@pytest.fixture(scope="module")
def rsa_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keygen(tmp_path_factory.mktemp("rsa") / "rsa3072", "rsa")


async def test_sha1_rsa_signatures_are_refused(server: ServerProcess, keys: Keys,
                                               restore: None, rsa_client: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    publish(keys, keys.pub(rsa_client))
    # The same key with SHA-2 signatures logs in ...
    assert can_log_in(server, keys, rsa_client)
    # ... OpenSSH made to sign with SHA-1 `ssh-rsa` does not.
    assert not can_log_in(server, keys, rsa_client, "-o", "PubkeyAcceptedAlgorithms=ssh-rsa")
    # A client that ignores server-sig-algs and signs with SHA-1 anyway is refused by the
    # server's own check. paramiko 5 can no longer sign with SHA-1; asyncssh can, and does when
    # it skips the server-sig-algs negotiation (its RSA key pair signs ssh-rsa by default).
    monkeypatch.setattr(asyncssh.connection.SSHClientConnection, "_choose_signature_alg",
                        lambda self, keypair: True)
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect("127.0.0.1", server.port, username=LOGIN,
                               client_keys=[str(rsa_client)], known_hosts=None,
                               agent_path=None, signature_algs=["ssh-rsa"])
    refused = [e for e in server.events("login.failed") if e["reason"] == "weak_signature"]
    assert refused and refused[-1]["algorithm"] == "ssh-rsa"


def test_option_rules_units() -> None:
    assert split_options("ssh-ed25519 AAAA c") == ("", "ssh-ed25519 AAAA c")
    assert split_options('from="a b",restrict ssh-ed25519 AAAA') == \
        ('from="a b",restrict', "ssh-ed25519 AAAA")
    assert judge_options('command="internal-sftp  -R",RESTRICT').read_only
    assert judge_options('from="10.0.0.0/8",from="127.0.0.1"').sources == \
        ("10.0.0.0/8", "127.0.0.1")
    assert parse_expiry("20260101Z").isoformat() == "2026-01-01T00:00:00+00:00"
    assert parse_expiry("202601011230Z").isoformat() == "2026-01-01T12:30:00+00:00"
    for bad in ('expiry-time="2026"', 'expiry-time="20261399"', 'from="x', "no-pty=1",
                'command="internal-sftp",command="internal-sftp -R"', "restrict,,no-pty",
                'from=""'):
        with pytest.raises(ValueError):
            judge_options(bad)
