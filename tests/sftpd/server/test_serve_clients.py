"""Every ordinary client against a real `sftpd serve`: upload, list, download, bytes checked."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from tests.conftest import missing, require_binary
from tests.sftpd.server.conftest import (
    LOGIN,
    Keys,
    ServerProcess,
    openssh_sftp,
    ssh_options,
    start_server,
)

PAYLOAD = os.urandom(300_000) + b"\nend\n"
BACKUP = b"PGDMP backup bytes " * 5000


@pytest.fixture(scope="module")
def seeded(server: ServerProcess) -> ServerProcess:
    (server.root / "downloads/backups/lincoln.dump").write_bytes(BACKUP)
    return server


def assert_uploaded(server: ServerProcess, rel: str, data: bytes = PAYLOAD) -> None:
    got = (server.root / rel).read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_openssh_sftp_batch(seeded: ServerProcess, keys: Keys, tmp_path: Path) -> None:
    src = tmp_path / "users.csv"
    src.write_bytes(PAYLOAD)
    out = tmp_path / "got.dump"
    result = openssh_sftp(seeded, keys, f"""mkdir /upload/2026-11-29T0200Z-sftp
put {src} /upload/2026-11-29T0200Z-sftp/users.csv
ls -l /upload/2026-11-29T0200Z-sftp
ls /downloads
get /downloads/backups/lincoln.dump {out}
""")
    assert result.returncode == 0, result.stderr
    assert "users.csv" in result.stdout and "backups" in result.stdout
    # `ls -l` prints the server's long names: owners by number, as chrooted internal-sftp shows.
    listed = next(line for line in result.stdout.splitlines()
                  if line.startswith("-") and line.endswith("users.csv"))
    assert listed.split()[2:4] == [str(os.getuid()), str(os.getgid())], listed
    assert_uploaded(seeded, "upload/2026-11-29T0200Z-sftp/users.csv")
    assert out.read_bytes() == BACKUP
    closes = [e for e in seeded.events("file.closed")
              if e["path"] == "/upload/2026-11-29T0200Z-sftp/users.csv"]
    assert closes and closes[-1]["bytes"] == len(PAYLOAD) and closes[-1]["complete"]
    assert any(e["fingerprint"].startswith("SHA256:") for e in seeded.events("login.succeeded"))


@pytest.mark.parametrize("legacy", [False, True], ids=["scp-sftp-protocol", "scp-O-legacy"])
def test_scp(seeded: ServerProcess, keys: Keys, tmp_path: Path, legacy: bool) -> None:
    require_binary("scp")
    epoch = f"2026-11-29T0200Z-scp{int(legacy)}"
    (seeded.root / "upload" / epoch).mkdir()
    src = tmp_path / "users.csv"
    src.write_bytes(PAYLOAD)
    flags = ["-O"] if legacy else []
    base = ["scp", *flags, *ssh_options(keys), "-P", str(seeded.port)]
    up = subprocess.run([*base, str(src), f"{LOGIN}@127.0.0.1:/upload/{epoch}/users.csv"],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert_uploaded(seeded, f"upload/{epoch}/users.csv")
    out = tmp_path / "dump"
    down = subprocess.run([*base, f"{LOGIN}@127.0.0.1:/downloads/backups/lincoln.dump",
                           str(out)], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert out.read_bytes() == BACKUP
    # The same write rules apply to scp: /downloads stays read-only.
    denied = subprocess.run([*base, str(src), f"{LOGIN}@127.0.0.1:/downloads/x.csv"],
                            capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0
    assert not (seeded.root / "downloads/x.csv").exists()


def test_lftp(seeded: ServerProcess, keys: Keys, tmp_path: Path) -> None:
    require_binary("lftp")
    src = tmp_path / "users.csv"
    src.write_bytes(PAYLOAD)
    out = tmp_path / "lincoln.dump"
    connect = "ssh -a -x " + " ".join(ssh_options(keys))
    script = f"""set sftp:connect-program "{connect}"
set net:max-retries 1
open -u {LOGIN}, -p {seeded.port} sftp://127.0.0.1
mkdir /upload/2026-11-29T0200Z-lftp
put {src} -o /upload/2026-11-29T0200Z-lftp/users.csv
cls -1 /upload/2026-11-29T0200Z-lftp/
get /downloads/backups/lincoln.dump -o {out}
"""
    result = subprocess.run(["lftp", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "users.csv" in result.stdout
    assert_uploaded(seeded, "upload/2026-11-29T0200Z-lftp/users.csv")
    assert out.read_bytes() == BACKUP


@pytest.fixture(scope="module")
def compat_server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerProcess]:
    """Debian 12's curl links libssh2 1.10, which knows no encrypt-then-MAC and no AES-GCM."""
    base = tmp_path_factory.mktemp("compat")
    srv = start_server(base / "data", keys, base / "audit.jsonl", "--compat-macs")
    (srv.root / "downloads/backups/lincoln.dump").write_bytes(BACKUP)
    yield srv
    assert srv.stop() == 0


def test_curl(compat_server: ServerProcess, keys: Keys, tmp_path: Path) -> None:
    curl = require_binary("curl")
    if "sftp" not in subprocess.run([curl, "-V"], capture_output=True, text=True).stdout:
        missing("a curl built with SFTP support")
    src = tmp_path / "users.csv"
    src.write_bytes(PAYLOAD)
    base = [curl, "-sS", "--insecure", "--key", str(keys.client),
            "--pubkey", str(keys.client) + ".pub", "-u", f"{LOGIN}:"]
    url = f"sftp://127.0.0.1:{compat_server.port}"
    up = subprocess.run([*base, "--ftp-create-dirs", "-T", str(src),
                         f"{url}/upload/2026-11-29T0200Z-curl/users.csv"],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert_uploaded(compat_server, "upload/2026-11-29T0200Z-curl/users.csv")
    listing = subprocess.run([*base, "-l", f"{url}/upload/2026-11-29T0200Z-curl/"],
                             capture_output=True, text=True, timeout=60)
    assert "users.csv" in listing.stdout.split()
    down = subprocess.run([*base, f"{url}/downloads/backups/lincoln.dump"],
                          capture_output=True, timeout=60)
    assert down.returncode == 0 and down.stdout == BACKUP


def test_paramiko(seeded: ServerProcess, keys: Keys) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", seeded.port, username=LOGIN, key_filename=str(keys.client),
                   look_for_keys=False, allow_agent=False)
    try:
        sftp = client.open_sftp()
        sftp.mkdir("/upload/2026-11-29T0200Z-paramiko")
        with sftp.open("/upload/2026-11-29T0200Z-paramiko/users.csv", "wb") as f:
            f.write(PAYLOAD)
        assert sftp.listdir("/upload/2026-11-29T0200Z-paramiko") == ["users.csv"]
        assert sorted(sftp.listdir("/")) == ["downloads", "upload", "upload-processed"]
        with sftp.open("/downloads/backups/lincoln.dump", "rb") as f:
            assert f.read() == BACKUP
        assert sftp.normalize("/upload/../../..") == "/"
    finally:
        client.close()
    assert_uploaded(seeded, "upload/2026-11-29T0200Z-paramiko/users.csv")


async def test_asyncssh(seeded: ServerProcess, keys: Keys) -> None:
    async with asyncssh.connect("127.0.0.1", seeded.port, username=LOGIN,
                                client_keys=[str(keys.client)], known_hosts=None,
                                agent_path=None) as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("/upload/2026-11-29T0200Z-asyncssh")
        async with sftp.open("/upload/2026-11-29T0200Z-asyncssh/users.csv", "wb") as f:
            await f.write(PAYLOAD)
        names = await sftp.listdir("/upload/2026-11-29T0200Z-asyncssh")
        assert "users.csv" in names
        async with sftp.open("/downloads/backups/lincoln.dump", "rb") as f:
            assert await f.read() == BACKUP
    assert_uploaded(seeded, "upload/2026-11-29T0200Z-asyncssh/users.csv")
