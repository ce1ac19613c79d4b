"""The backups directory: which files are good backups, keeping the newest N, and its lock.

A good backup is `<district>-<YYYYMMDDTHHMMSSZ>[-<n>].dump` with a well-formed
`<same name>.sha256` beside it. The backup job writes the checksum only after `pg_restore` has
read the archive back, and publishes it before the dump, so every good backup has been verified.
Anything else in the directory (hidden temporaries, a dump without checksum, files staff put
there) is never counted as a backup and never pruned, so rotation can only delete backups it
can prove are superseded by newer good ones.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHECKSUM_SUFFIX = ".sha256"
# Hidden, so neither a district listing the directory nor rotation ever sees a dump in flight.
TEMPORARY_PREFIX = ".incomplete-"

BACKUP_NAME = re.compile(
    r"^(?P<district>[A-Za-z0-9][A-Za-z0-9._-]*?)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?\.dump$")
CHECKSUM_LINE = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<name>[^\n/]+)\n?$")


@dataclass(frozen=True)
class Backup:
    """One good backup in the directory."""

    name: str
    stamp: str
    seq: int
    digest: str

    @property
    def checksum_name(self) -> str:
        return self.name + CHECKSUM_SUFFIX


def read_checksum(path: Path, expected_name: str) -> str | None:
    """The digest a sha256sum-format file holds for expected_name, or None if it holds none."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    match = CHECKSUM_LINE.match(text)
    if match is None or match.group("name") != expected_name:
        return None
    return match.group("digest")


def good_backups(directory: Path) -> list[Backup]:
    """The good backups in directory, newest first."""
    found: list[Backup] = []
    try:
        names = [entry.name for entry in directory.iterdir()]
    except FileNotFoundError:
        return []
    for name in names:
        match = BACKUP_NAME.match(name)
        if match is None or not (directory / name).is_file():
            continue
        digest = read_checksum(directory / (name + CHECKSUM_SUFFIX), name)
        if digest is None:
            continue
        found.append(Backup(name=name, stamp=match.group("stamp"),
                            seq=int(match.group("seq") or 0), digest=digest))
    found.sort(key=lambda b: (b.stamp, b.seq), reverse=True)
    return found


def orphan_checksums(directory: Path) -> list[str]:
    """Checksum files whose dump is gone (a prune or publish interrupted between two steps)."""
    orphans: list[str] = []
    for name in (entry.name for entry in directory.iterdir()):
        dump_name = name.removesuffix(CHECKSUM_SUFFIX)
        if (name.endswith(CHECKSUM_SUFFIX) and BACKUP_NAME.match(dump_name)
                and not (directory / dump_name).exists()):
            orphans.append(name)
    return sorted(orphans)


def stale_temporaries(directory: Path) -> list[str]:
    """Hidden temporaries left by a backup that was killed; only valid while holding the lock."""
    return sorted(e.name for e in directory.iterdir() if e.name.startswith(TEMPORARY_PREFIX))


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(directory: Path, wait: bool = True) -> Iterator[None]:
    """Hold the backups directory exclusively (a flock on the directory itself).

    A backup and a retention sweep may be scheduled at the same time; with the lock, neither
    prunes while the other publishes, and stale temporaries can be removed safely. Locking the
    directory rather than a lock file leaves nothing extra for the district to see. With
    wait=False, BlockingIOError is raised at once when another process holds it.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def plan_prune(directory: Path, keep: int) -> list[Backup]:
    """The good backups beyond the newest `keep` (never the newest one: keep is at least 1)."""
    if keep < 1:
        raise ValueError("keep must be at least 1: the newest good backup is never deleted")
    return good_backups(directory)[keep:]


def prune(directory: Path, keep: int) -> list[str]:
    """Delete good backups beyond the newest `keep`, and orphaned checksums; return the names."""
    removed: list[str] = []
    for backup in plan_prune(directory, keep):
        # The dump first: a checksum left alone by a crash is an orphan, cleaned next time;
        # a dump left without its checksum would stop counting as good yet never be pruned.
        (directory / backup.name).unlink(missing_ok=True)
        (directory / backup.checksum_name).unlink(missing_ok=True)
        removed.append(backup.name)
    for name in orphan_checksums(directory):
        (directory / name).unlink(missing_ok=True)
        removed.append(name)
    if removed:
        fsync_directory(directory)
    return removed
