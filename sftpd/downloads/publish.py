"""Download epochs: build hidden, publish whole with `COMPLETE` inside, prune oldest first.

An epoch is built in `.incomplete-<name>` (hidden from listings and from every reader),
its files fsynced, `COMPLETE` written last and fsynced, and only then renamed to
`<YYYYMMDD-HHMMSS>`. `COMPLETE` goes in before the rename, not after, so no directory without
it ever carries a final name, even when the job is killed between two steps: there is nothing
for a consumer to skip and nothing for a rerun to repair. Deleting goes the other way: an old
epoch is first renamed to `.deleting-<name>`, so a half-deleted epoch is never visible either.
Leftovers of a killed run are hidden and removed by the next run, under the directory's lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sftpd.epochs.checkpoints import checkpoint

COMPLETE = "COMPLETE"
EPOCH_NAME = re.compile(r"^\d{8}-\d{6}$")
BUILDING_PREFIX = ".incomplete-"
DELETING_PREFIX = ".deleting-"


class Busy(RuntimeError):
    """Another run holds the directory."""


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the directory exclusively (a flock on the directory: nothing extra to see)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another run is working in {directory}") from None
        yield
    finally:
        os.close(fd)


def remove_leftovers(directory: Path) -> list[str]:
    """Remove the hidden directories a killed run left behind; only safe under the lock."""
    removed = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith((BUILDING_PREFIX, DELETING_PREFIX)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    if removed:
        fsync_path(directory, directory=True)
    return removed


def complete_epochs(directory: Path) -> list[str]:
    """Published epochs (well-named directories holding COMPLETE), newest first."""
    names = [entry.name for entry in directory.iterdir()
             if EPOCH_NAME.match(entry.name) and (entry / COMPLETE).is_file()]
    return sorted(names, reverse=True)


def new_epoch_name(directory: Path, now: datetime) -> str:
    """`YYYYMMDD-HHMMSS` in UTC, a second later while that name (or its build) is taken.

    Never earlier than the newest existing epoch, so newest-by-name stays newest-by-time even
    when the clock steps back.
    """
    moment = now.astimezone(UTC).replace(microsecond=0)
    existing = [e.name for e in directory.iterdir() if EPOCH_NAME.match(e.name)]
    if existing:
        moment = max(moment, epoch_time(max(existing)) + timedelta(seconds=1))
    while True:
        name = f"{moment:%Y%m%d-%H%M%S}"
        if not (directory / name).exists() and not (directory / (BUILDING_PREFIX + name)).exists():
            return name
        moment += timedelta(seconds=1)


def start_build(directory: Path, name: str) -> Path:
    """The hidden directory an epoch is built in."""
    building = directory / (BUILDING_PREFIX + name)
    building.mkdir(mode=0o755)
    return building


def publish(directory: Path, building: Path, name: str) -> None:
    """Fsync every file and folder in it, write COMPLETE last, then give it its final name."""
    for folder, _dirs, files in os.walk(building, topdown=False):
        for file_name in files:
            fsync_path(Path(folder, file_name))
        if Path(folder) != building:
            fsync_path(Path(folder), directory=True)
    checkpoint("download epoch: files fsynced, no COMPLETE yet")
    fd = os.open(building / COMPLETE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_path(building, directory=True)
    checkpoint("download epoch: COMPLETE written, not renamed yet")
    building.rename(directory / name)
    fsync_path(directory, directory=True)
    checkpoint("download epoch: published")


def epoch_time(name: str) -> datetime:
    return datetime.strptime(name, "%Y%m%d-%H%M%S").replace(tzinfo=UTC)


def prune(directory: Path, keep: int) -> list[str]:
    """Delete complete epochs beyond the newest `keep`, oldest first; never the newest."""
    if keep < 1:
        raise ValueError("keep must be at least 1: the newest complete epoch is never deleted")
    return _delete(directory, list(reversed(complete_epochs(directory)[keep:])))


def prune_older_than(directory: Path, cutoff: datetime) -> list[str]:
    """Delete complete epochs named before cutoff, oldest first."""
    old = [name for name in complete_epochs(directory) if epoch_time(name) < cutoff]
    return _delete(directory, list(reversed(old)))


def _delete(directory: Path, names: list[str]) -> list[str]:
    pruned = []
    for name in names:
        hidden = directory / (DELETING_PREFIX + name)
        (directory / name).rename(hidden)
        fsync_path(directory, directory=True)
        checkpoint(f"download epoch: {name} hidden for deletion")
        shutil.rmtree(hidden)
        pruned.append(name)
    return pruned
