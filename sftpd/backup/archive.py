"""Making one backup file: pg_dump into a hidden temporary, verify, checksum, fsync, publish.

pg_dump writes the archive itself (`--file` on the temporary) rather than through a pipe: on a
seekable file it goes back and records each table's data offset in the archive's table of
contents, which `pg_restore --jobs N` needs for a parallel restore. The archive is then
fsynced, read back by `pg_restore`, hashed, and only then renamed to its final name: the
checksum first, the dump last, so a dump under its final name always has its checksum.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sftpd.backup.errors import BackupError
from sftpd.backup.pgclient import ClientTools, Connection, classify_connect_error
from sftpd.backup.rotation import (
    CHECKSUM_SUFFIX,
    TEMPORARY_PREFIX,
    fsync_directory,
)
from sftpd.events import emit

# Errors from the file system that mean "no room": the disk, or the volume's quota.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXT = ("no space left on device", "disk quota exceeded")
VERIFY_MODES = ("list", "full")
WRITEBACK_INTERVAL_SECONDS = 2.0


@dataclass(frozen=True)
class Published:
    """A backup now visible under its final name."""

    name: str
    bytes: int
    sha256: str


def final_name(directory: Path, district: str, started: datetime) -> str:
    """`<district>-<UTC stamp>.dump`, with `-<n>` added if that second is already taken."""
    base = f"{district}-{started:%Y%m%dT%H%M%SZ}"
    name, seq = f"{base}.dump", 0
    while ((directory / name).exists() or (directory / (name + CHECKSUM_SUFFIX)).exists()
           or (directory / (TEMPORARY_PREFIX + name)).exists()):
        seq += 1
        name = f"{base}-{seq}.dump"
    return name


def disk_full(directory: Path, detail: str) -> BackupError:
    try:
        free = os.statvfs(directory)
        room = f"{free.f_bavail * free.f_frsize} bytes free"
    except OSError:
        room = "free space unknown"
    return BackupError(
        "DiskFull",
        f"the volume holding {directory} is full ({room}): {detail.strip()}; the partial "
        "backup was removed and the earlier backups are untouched")


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def write_back_so_far(path: Path) -> None:
    """Flush what pg_dump has written so far, while it goes on compressing the rest.

    The kernel would otherwise hold most of a large archive as dirty pages until the final
    fsync, which then waits for all of it; flushing along the way overlaps the disk writes
    with pg_dump's CPU-bound compression, so the fsync at the end has little left to do.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    # An error here is raised, never swallowed: Linux reports a failed writeback once, so a
    # later fsync of the same file could succeed and hide it.
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def run_pg_dump(tools: ClientTools, connection: Connection, dest: Path) -> None:
    """Dump the database in custom format into dest; raise BackupError on any failure."""
    command = [str(tools.pg_dump), "--format=custom", "--no-password", f"--file={dest}",
               f"--dbname={connection.conninfo}"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=connection.environment(dict(os.environ)))
    try:
        while True:
            try:
                _, stderr_bytes = proc.communicate(timeout=WRITEBACK_INTERVAL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                write_back_so_far(dest)
    finally:
        # Our own job being stopped (SIGTERM at a deadline) must not leave pg_dump running on.
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        return
    stderr = stderr_bytes.decode(errors="replace").strip()
    if any(text in stderr.lower() for text in NO_SPACE_TEXT):
        raise disk_full(dest.parent, f"pg_dump: {stderr}")
    if "connection to server" in stderr.lower() or "authentication" in stderr.lower():
        raise classify_connect_error(stderr, connection.redacted)
    raise BackupError("DumpFailed", f"pg_dump {_describe_exit(proc.returncode)}"
                                    + (f": {stderr}" if stderr else ""))


def verify_archive(tools: ClientTools, path: Path, mode: str) -> int:
    """Read the archive back with pg_restore; return how many entries its contents list has.

    `list` reads the table of contents (`pg_restore --list`); `full` also reads and
    decompresses every data block by restoring into /dev/null as a script.
    """
    listing = subprocess.run([str(tools.pg_restore), "--list", str(path)],
                             capture_output=True, text=True, check=False)
    entries = [line for line in listing.stdout.splitlines()
               if line.strip() and not line.startswith(";")]
    if listing.returncode != 0 or not entries:
        raise BackupError("VerifyFailed", "pg_restore --list cannot read the new archive: "
                                          + (listing.stderr.strip() or "it lists nothing"))
    if mode == "full":
        full = subprocess.run([str(tools.pg_restore), "--file=/dev/null", str(path)],
                              capture_output=True, text=True, check=False)
        if full.returncode != 0:
            raise BackupError("VerifyFailed", "pg_restore cannot read the new archive's data: "
                                              + full.stderr.strip())
    return len(entries)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def make_backup(directory: Path, name: str, tools: ClientTools, connection: Connection,
                verify: str) -> Published:
    """Dump, verify and publish one backup as directory/name; nothing stays behind on failure."""
    temp_dump = directory / (TEMPORARY_PREFIX + name)
    temp_sum = directory / (TEMPORARY_PREFIX + name + CHECKSUM_SUFFIX)
    published = False
    try:
        started = time.monotonic()
        run_pg_dump(tools, connection, temp_dump)
        dumped = time.monotonic()
        fsync_file(temp_dump)
        verify_archive(tools, temp_dump, verify)
        digest = sha256_of(temp_dump)
        size = temp_dump.stat().st_size
        emit("backup.dumped", file=name, bytes=size,
             dumpSeconds=round(dumped - started, 3),
             fsyncVerifyHashSeconds=round(time.monotonic() - dumped, 3))
        # sha256sum's own format (two spaces: text mode), so `sha256sum -c` works as is.
        with temp_sum.open("w", encoding="ascii") as handle:
            handle.write(f"{digest}  {name}\n")
            handle.flush()
            os.fsync(handle.fileno())
        temp_sum.rename(directory / (name + CHECKSUM_SUFFIX))
        temp_dump.rename(directory / name)
        fsync_directory(directory)
        published = True
        return Published(name=name, bytes=size, sha256=digest)
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise disk_full(directory, str(exc)) from None
        raise
    finally:
        if not published:
            temp_dump.unlink(missing_ok=True)
            temp_sum.unlink(missing_ok=True)
            # A checksum published just before a failed dump rename must not stay orphaned.
            if not (directory / name).exists():
                (directory / (name + CHECKSUM_SUFFIX)).unlink(missing_ok=True)
