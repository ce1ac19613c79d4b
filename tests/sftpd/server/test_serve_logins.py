"""Logins named like the district's domain (applegrove.org): a real OpenSSH sftp session with a
dotted user name, the names `sftpd serve` refuses to start with, and a hostile user name."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from sftpd.server.access import LOGIN_MAX, check_login
from tests.conftest import require_binary
from tests.sftpd.server.conftest import Keys, ServerProcess, ssh_options, start_server

DOMAIN = "applegrove.k12.example.org"


@pytest.fixture(scope="module")
def domain_server(tmp_path_factory: pytest.TempPathFactory,
                  keys: Keys) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("domain")
    srv = start_server(base / "data", keys, base / "audit.jsonl", "--login", DOMAIN)
    yield srv
    assert srv.stop() == 0


def sftp_as(server: ServerProcess, keys: Keys, user: str,
            batch: str) -> subprocess.CompletedProcess[str]:
    require_binary("sftp")
    return subprocess.run(["sftp", *ssh_options(keys), "-P", str(server.port), "-b", "-",
                           f"{user}@127.0.0.1"], input=batch, capture_output=True, text=True,
                          timeout=60)


def test_openssh_sftp_logs_in_with_the_districts_domain(domain_server: ServerProcess,
                                                        keys: Keys, tmp_path: Path) -> None:
    local = tmp_path / "students.csv"
    local.write_text("Student Id,Last Name\n1,Doe\n")
    done = sftp_as(domain_server, keys, DOMAIN,
                   f"mkdir /upload/20261001-120000\nput {local} /upload/20261001-120000/\n")
    assert done.returncode == 0, done.stderr
    uploaded = domain_server.root / "upload" / "20261001-120000" / "students.csv"
    assert uploaded.read_text() == local.read_text()
    assert domain_server.wait_event("login.succeeded")[-1]["user"] == DOMAIN
    # The name without its dots, or another domain's, is some other account.
    for other in ("applegrovek12exampleorg", "applegrove.k12.example.org.evil"):
        refused = sftp_as(domain_server, keys, other, "ls /\n")
        assert refused.returncode != 0
    reasons = [(e["user"], e["reason"]) for e in domain_server.events("login.failed")]
    assert ("applegrovek12exampleorg", "unknown_user") in reasons


def test_a_hostile_user_name_is_logged_bounded(domain_server: ServerProcess,
                                               keys: Keys) -> None:
    # (asyncssh itself refuses 1024 bytes and more before any of our code runs)
    before = len(domain_server.events("login.failed"))
    transport = paramiko.Transport(("127.0.0.1", domain_server.port))
    transport.start_client(timeout=10)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_publickey(
                "x" * 1000, paramiko.Ed25519Key.from_private_key_file(str(keys.client)))
    finally:
        transport.close()
    failed = domain_server.wait_event("login.failed", before + 1)[-1]
    assert failed["reason"] == "unknown_user"
    assert failed["user"] == "x" * LOGIN_MAX + "..."
    assert domain_server.proc.poll() is None


@pytest.mark.parametrize("login", [
    "applegrove.org", "lincoln", "lincoln_sis-2", "4cd.k12.ca.us", "a", "a" * LOGIN_MAX])
def test_valid_logins(login: str) -> None:
    assert check_login(login) == login


@pytest.mark.parametrize("login", [
    ".applegrove.org", "applegrove..org", "applegrove.org.", "AppleGrove.org", "-applegrove",
    "_lincoln", "apple grove", "apple/grove", "apple@grove", "", "a" * (LOGIN_MAX + 1),
    "applegrove.org\n"])
def test_serve_refuses_to_start_with_an_invalid_login(login: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFTPD_")}
    done = subprocess.run([sys.executable, "-m", "sftpd", "serve", "--root", str(tmp_path),
                           f"--login={login}", "--port", "0", "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "is not a valid user name: use lowercase letters, digits, ., - and _" in done.stderr
