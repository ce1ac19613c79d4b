"""Host keys announced after login (hostkeys-00@openssh.com), as OpenSSH UpdateHostKeys sees."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess, keygen, start_server


@pytest.fixture
def rotating_server(tmp_path: Path, keys: Keys) -> Iterator[tuple[ServerProcess, Path]]:
    """A server with a second, newer ed25519 key after the usual two: a key being rolled in."""
    upcoming = keygen(tmp_path / "ssh_host_ed25519_key_next")
    srv = start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl",
                       "--host-key", str(upcoming))
    yield srv, upcoming
    srv.stop()


def sftp_checking(server: ServerProcess, keys: Keys, known_hosts: Path,
                  update: bool, *extra: str) -> subprocess.CompletedProcess[str]:
    """`sftp -b` with strict host key checking against known_hosts (the shared ssh_options
    turn checking off, and ssh keeps the first value it is given for an option)."""
    require_binary("sftp")
    return subprocess.run(
        ["sftp", "-i", str(keys.client), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", f"UpdateHostKeys={'yes' if update else 'no'}", *extra,
         "-P", str(server.port), "-b", "-",
         f"{LOGIN}@127.0.0.1"],
        input="ls /\n", capture_output=True, text=True, timeout=60)


def key_blob(path: Path) -> str:
    """The base64 key of an OpenSSH public key file."""
    return path.with_suffix(".pub").read_text().split()[1]


def test_clients_learn_every_host_key_including_a_reserved_one(
        rotating_server: tuple[ServerProcess, Path], keys: Keys, tmp_path: Path) -> None:
    server, upcoming = rotating_server
    known_hosts = tmp_path / "known_hosts"
    # The district trusts only the ed25519 key it was given (the District's knownHosts line).
    known_hosts.write_text(f"[127.0.0.1]:{server.port} ssh-ed25519 "
                           f"{key_blob(keys.host_ed25519)}\n")
    # OpenSSH 9.2 matches an announced key's type name against HostKeyAlgorithms, and an RSA
    # key's name is "ssh-rsa", which its defaults no longer list (SHA-1 signatures): without
    # this it would skip the RSA key. The key exchange still uses ed25519 (the known key).
    done = sftp_checking(server, keys, known_hosts, True, "-o", "HostKeyAlgorithms=+ssh-rsa")
    assert done.returncode == 0, done.stderr
    learned = known_hosts.read_text()
    # The client checked the new keys with hostkeys-prove-00 before writing them down.
    assert key_blob(keys.host_rsa) in learned
    assert key_blob(upcoming) in learned
    assert key_blob(keys.host_ed25519) in learned


def test_a_second_key_of_a_type_is_reserved_not_used(
        rotating_server: tuple[ServerProcess, Path], keys: Keys, tmp_path: Path) -> None:
    """The first ed25519 key still signs the key exchange: a client that knows only it connects
    with strict checking, and one that knows only the reserved key is refused."""
    server, upcoming = rotating_server
    for trusted, ok in ((keys.host_ed25519, True), (upcoming, False)):
        known_hosts = tmp_path / f"known_hosts_{trusted.name}"
        known_hosts.write_text(f"[127.0.0.1]:{server.port} ssh-ed25519 {key_blob(trusted)}\n")
        done = sftp_checking(server, keys, known_hosts, False)
        assert (done.returncode == 0) is ok, (trusted.name, done.stderr)
