"""Host keys announced after login (hostkeys-00@openssh.com), as OpenSSH UpdateHostKeys sees."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.sftpd.server.conftest import (
    LOGIN,
    Keys,
    SecretVolume,
    ServerProcess,
    keygen,
    start_server,
)


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


def test_a_rotation_arrives_as_secret_volume_updates_without_a_restart(
        keys: Keys, tmp_path: Path) -> None:
    """The operator's rotation, step by step, as the kubelet delivers it: next keys appear in
    the host-key volume (announced, learned by UpdateHostKeys), then become current with the
    old ones gone. The same server process serves every step."""
    made = tmp_path / "made"
    made.mkdir()
    old_ed, old_rsa = keygen(made / "old_ed25519"), keygen(made / "old_rsa", "rsa")
    new_ed, new_rsa = keygen(made / "new_ed25519"), keygen(made / "new_rsa", "rsa")

    def files(current: tuple[Path, Path], upcoming: tuple[Path, Path] | None) -> dict[str, str]:
        out = {}
        for prefix, pair in (("", current), ("next_", upcoming)):
            for name, key in zip(("ssh_host_ed25519_key", "ssh_host_rsa_key"), pair or (),
                                 strict=False):
                out[prefix + name] = key.read_text()
        return out

    volume = SecretVolume(tmp_path / "host-keys")
    volume.publish(files((old_ed, old_rsa), None))
    served = Keys(volume.directory, volume.directory / "ssh_host_ed25519_key",
                  volume.directory / "ssh_host_rsa_key", keys.client, keys.other,
                  keys.authorized)
    server = start_server(tmp_path / "data", served, tmp_path / "audit.jsonl",
                          "--next-host-key", str(volume.directory / "next_ssh_host_ed25519_key"),
                          "--next-host-key", str(volume.directory / "next_ssh_host_rsa_key"))
    try:
        where = f"[127.0.0.1]:{server.port}"
        learner = tmp_path / "known_hosts_learner"
        learner.write_text(f"{where} ssh-ed25519 {key_blob(old_ed)}\n")
        stale = tmp_path / "known_hosts_stale"
        stale.write_text(f"{where} ssh-ed25519 {key_blob(old_ed)}\n")

        volume.publish(files((old_ed, old_rsa), (new_ed, new_rsa)))
        loaded = server.wait_event("host_keys.loaded", timeout=30)[-1]
        assert len(loaded["signing"]) == 2 and len(loaded["announced"]) == 2
        # ssh writes announced keys down after the server proved them, a round trip after
        # login: a session that ends at once may not wait for it, so log in until learned.
        deadline = time.monotonic() + 60
        learned = False
        while not learned and time.monotonic() < deadline:
            done = sftp_checking(server, keys, learner, True, "-o", "HostKeyAlgorithms=+ssh-rsa")
            assert done.returncode == 0, done.stderr
            learned = key_blob(new_ed) in learner.read_text() and \
                key_blob(new_rsa) in learner.read_text()
        assert learned, learner.read_text()

        volume.publish(files((new_ed, new_rsa), None))
        server.wait_event("host_keys.loaded", count=2, timeout=30)
        # Strict checking, no prompt and no warning for the client that learned the key.
        done = sftp_checking(server, keys, learner, True)
        assert done.returncode == 0, done.stderr
        assert "WARNING" not in done.stderr and "differs" not in done.stderr, done.stderr
        # The client that knows only the old key is refused: it is no longer served at all.
        refused = sftp_checking(server, keys, stale, False)
        assert refused.returncode != 0
        assert "Host key verification failed" in refused.stderr, refused.stderr
        assert server.proc.poll() is None
    finally:
        assert server.stop() == 0
