"""Escape and permission attempts against a real server: each refused, nothing changed anywhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess, openssh_sftp, snapshot


@pytest.fixture(scope="module")
def planted(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Links inside the root that lead out of it, and a directory outside worth protecting."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("staff only\n")
    # Links that lead out of the root point at canaries of the test's own, never at the host's
    # /etc/passwd: a regression must fail this test, not wreck the machine running it.
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    root = server.root
    (root / "downloads/backups/lincoln.dump").write_bytes(b"PGDMP" * 100)
    (root / "downloads/escape").symlink_to("/etc")
    (root / "downloads/pdfs/up").symlink_to("../../..")
    (root / "upload/evil.csv").symlink_to(outside / "passwd")
    (root / "upload/outlink").symlink_to(outside)
    (root / "upload/2026-11-28T0200Z").mkdir(exist_ok=True)
    (root / "upload/2026-11-28T0200Z/users.csv").write_text("sourcedId\n1\n")
    return outside


@pytest.fixture
def sftp(server: ServerProcess, keys: Keys) -> Iterator[paramiko.SFTPClient]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", server.port, username=LOGIN, key_filename=str(keys.client),
                   look_for_keys=False, allow_agent=False)
    try:
        yield client.open_sftp()
    finally:
        client.close()


def attempts(s: paramiko.SFTPClient) -> dict[str, Callable[[], object]]:
    dump = "/downloads/backups/lincoln.dump"

    def chmod_read_handle() -> None:
        with s.open(dump, "rb") as f:
            f.chmod(0o666)

    def chown_upload() -> None:
        s.chown("/upload/2026-11-28T0200Z/users.csv", 0, 0)

    return {
        "dotdot listing": lambda: s.listdir("/../../etc"),
        "absolute host path": lambda: s.open("/etc/passwd").read(),
        "relative dotdot": lambda: s.open("../../../../etc/passwd").read(),
        "dotdot inside upload": lambda: s.open("/upload/../../../etc/shadow").read(),
        "list planted dir link": lambda: s.listdir("/downloads/escape"),
        "read through dir link": lambda: s.open("/downloads/escape/passwd").read(),
        "stat through relative link": lambda: s.stat("/downloads/pdfs/up/etc"),
        "read planted file link": lambda: s.open("/upload/evil.csv").read(),
        "write planted file link": lambda: s.open("/upload/evil.csv", "wb").write(b"x"),
        "write through link to outside": lambda: s.open("/upload/outlink/new.txt", "wb"),
        "overwrite outside via link": lambda: s.open("/upload/outlink/secret.txt", "wb"),
        "readlink out of root": lambda: s.readlink("/downloads/escape"),
        "symlink to host file": lambda: s.symlink("/etc/passwd", "/upload/passwd"),
        "symlink inside upload": lambda: s.symlink("/upload/2026-11-28T0200Z", "/upload/l"),
        "write into downloads": lambda: s.open("/downloads/x.csv", "wb"),
        "append to a backup": lambda: s.open(dump, "ab").write(b"x"),
        "write at root": lambda: s.open("/new.csv", "wb"),
        "mkdir in downloads": lambda: s.mkdir("/downloads/new"),
        "mkdir at root": lambda: s.mkdir("/new-top"),
        "rmdir upload-processed": lambda: s.rmdir("/upload-processed"),
        "rmdir upload itself": lambda: s.rmdir("/upload"),
        "remove a backup": lambda: s.remove(dump),
        "rename out of upload": lambda: s.rename("/upload/2026-11-28T0200Z/users.csv",
                                                 "/downloads/users.csv"),
        "rename a backup into upload": lambda: s.rename(dump, "/upload/stolen.dump"),
        "rename upload itself": lambda: s.rename("/upload", "/upload2"),
        "posix-rename over a backup": lambda: s.posix_rename(
            "/upload/2026-11-28T0200Z/users.csv", dump),
        "setstat on /": lambda: s.chmod("/", 0o777),
        "chmod a backup": lambda: s.chmod(dump, 0o666),
        "utime on downloads": lambda: s.utime("/downloads", (0, 0)),
        "truncate a backup": lambda: s.truncate(dump, 0),
        "fsetstat on a read handle": chmod_read_handle,
        "chown in upload": chown_upload,
        "NUL byte in name": lambda: s.open("/upload/a\x00/../../etc/passwd", "wb"),
        "very long path": lambda: s.open("/upload/" + "a/" * 3000 + "x", "wb"),
        "very long name": lambda: s.open("/upload/" + "n" * 300, "wb"),
    }


def test_escape_and_permission_attempts_are_refused(
        server: ServerProcess, planted: Path, sftp: paramiko.SFTPClient) -> None:
    before, outside_before = snapshot(server.root), snapshot(planted)
    etc_passwd = Path("/etc/passwd").read_bytes()
    tried = attempts(sftp)
    assert len(tried) >= 25
    succeeded = []
    for name, attempt in tried.items():
        try:
            attempt()
        except OSError:  # paramiko raises IOError/PermissionError/FileNotFoundError
            continue
        succeeded.append(name)
    assert succeeded == [], f"not refused: {succeeded}"
    assert snapshot(server.root) == before
    assert snapshot(planted) == outside_before
    assert Path("/etc/passwd").read_bytes() == etc_passwd
    denied = {e.get("op") for e in server.events("request.denied")}
    assert {"open", "mkdir", "rename", "setstat", "symlink"} <= denied


def test_openssh_links_and_chroot_listing(server: ServerProcess, planted: Path,
                                          keys: Keys) -> None:
    before = snapshot(server.root)
    for command in ("ln /downloads/backups/lincoln.dump /upload/hard",
                    "ln -s /downloads/backups/lincoln.dump /upload/soft",
                    "rename /downloads /upload/d",
                    "chgrp 0 /downloads/backups/lincoln.dump"):
        result = openssh_sftp(server, keys, command + "\n")
        assert result.returncode != 0, command
    assert snapshot(server.root) == before
    listing = openssh_sftp(server, keys, "cd /..\npwd\nls -a\n")
    assert listing.returncode == 0, listing.stderr
    assert "Remote working directory: /" in listing.stdout
    assert "upload-processed" in listing.stdout and "etc" not in listing.stdout.split()


def test_writes_inside_upload_work(server: ServerProcess, sftp: paramiko.SFTPClient) -> None:
    """The rules refuse the right things only: everything a district does in /upload works."""
    sftp.mkdir("/upload/2026-11-30T0200Z")
    with sftp.open("/upload/2026-11-30T0200Z/a.csv.part", "wb") as f:
        f.write(b"id\n1\n")
    sftp.rename("/upload/2026-11-30T0200Z/a.csv.part", "/upload/2026-11-30T0200Z/a.csv")
    sftp.chmod("/upload/2026-11-30T0200Z/a.csv", 0o4755)
    sftp.utime("/upload/2026-11-30T0200Z/a.csv", (1_700_000_000, 1_700_000_000))
    local = server.root / "upload/2026-11-30T0200Z/a.csv"
    assert local.read_bytes() == b"id\n1\n"
    assert local.stat().st_mode & 0o7777 == 0o755  # set-id bits are dropped
    assert local.stat().st_mtime == 1_700_000_000
    sftp.remove("/upload/2026-11-30T0200Z/a.csv")
    sftp.rmdir("/upload/2026-11-30T0200Z")
    assert not (server.root / "upload/2026-11-30T0200Z").exists()
    assert os.path.isdir(server.root / "upload")
