"""Loose files in upload/ become one new epoch, named after their newest modification time.

Crash safety: the epoch's name is decided by the files themselves (their newest mtime, which a
rename does not change). A hidden staging directory is made and recorded, with the names of the
files to move, in the district's database (`stagings`) before anything moves; the files are
renamed in, and the staging directory becomes visible as an epoch with one rename at the end. A
rerun first finishes every recorded staging directory.

Trust: upload/ is the district's to write, so the processor acts only on the staging directories
its record names, checked to be the very directory it made (device and inode, opened without
following links), and moves only names that are one plain path component of a regular file
directly in upload/, between open directory fds. A `.sftpd-gather-*` entry it did not make is
left alone (an empty directory is removed: it may be a run's own, made just before a crash).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from sftpd.epochs import walk
from sftpd.epochs.checkpoints import checkpoint
from sftpd.epochs.completion import newest_change, still_uploading
from sftpd.epochs.fsops import open_dir, rename_noreplace, rename_with_suffix_at
from sftpd.epochs.names import COMPLETION_MARKER, GATHER_PREFIX
from sftpd.epochs.stagings import Record, Staging


@dataclass
class Gathering:
    """What gathering did: new epochs (already known to be settled), or why it waited, and the
    staging-like names in upload/ it did not make (left alone, for staff)."""

    epochs: list[str] = field(default_factory=list)
    waiting: str | None = None
    untrusted: list[str] = field(default_factory=list)
    # Why the loose files are not gathered at all (too many), for staff.
    refused: str | None = None


def epoch_name_for(files: list[Path]) -> str:
    newest = max(p.lstat().st_mtime for p in files)
    return time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(newest))


def gather_loose_files(upload: Path, settle_seconds: float, now: float, record: Record,
                       max_files: int = walk.DEFAULT_MAX_ENTRIES) -> Gathering:
    result = Gathering()
    for staging in record.all():
        name = _finish(upload, staging, record)
        if name is not None:
            result.epochs.append(name)
    result.untrusted = _untrusted_stagings(upload)
    loose: list[Path] = []
    with os.scandir(upload) as listing:
        for entry in listing:
            if entry.name.startswith(GATHER_PREFIX) or not entry.is_file(follow_symlinks=False):
                continue
            loose.append(Path(entry.path))
            if len(loose) > max_files:  # the same bound as an epoch's entries
                result.refused = f"more than {max_files} loose files"
                return result
    loose.sort()
    if not loose:
        return result
    busy = still_uploading(loose)
    if busy is not None:
        result.waiting = busy
        return result
    marked = any(p.name == COMPLETION_MARKER for p in loose)
    quiet = now - newest_change(loose)
    if not marked and quiet < settle_seconds:
        result.waiting = f"last change {quiet:.0f}s ago, settling for {settle_seconds:g}s"
        return result
    epoch = epoch_name_for(loose)
    with open_dir(upload) as upload_fd:
        made = _make_staging(upload_fd, epoch)
        checkpoint("gather: staging directory made")
        st = os.stat(made, dir_fd=upload_fd, follow_symlinks=False)
    staging = Staging(made, epoch, st.st_dev, st.st_ino, [p.name for p in loose])
    record.add(staging)
    checkpoint("gather: staging recorded")
    name = _finish(upload, staging, record)
    if name is not None:
        result.epochs.append(name)
    return result


def _make_staging(upload_fd: int, epoch: str) -> str:
    """A new, empty staging directory for epoch (a suffix when its name is taken by anything:
    what is there already is not the processor's)."""
    for attempt in range(10_000):
        name = GATHER_PREFIX + epoch + ("" if attempt == 0 else f".{attempt}")
        try:
            os.mkdir(name, 0o755, dir_fd=upload_fd)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(f"no free staging name for {epoch}")


def _untrusted_stagings(upload: Path) -> list[str]:
    """Staging-like names in upload/ the record does not hold, once every recorded one is
    finished: empty directories are removed, anything else is left and named."""
    found: list[str] = []
    with open_dir(upload) as upload_fd:
        for name in sorted(os.listdir(upload_fd)):  # noqa: PTH208 (an fd, not a path)
            if not name.startswith(GATHER_PREFIX):
                continue
            try:
                os.rmdir(name, dir_fd=upload_fd)  # only ever removes an empty directory
            except OSError:
                found.append(name)
    return found


def _is_plain_name(name: str) -> bool:
    """One path component naming something directly in a directory."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _finish(upload: Path, staging: Staging, record: Record) -> str | None:
    """Move the recorded files into the recorded staging directory and reveal it as an epoch;
    the epoch's name, or None when the directory is gone or is not the one the processor
    made (then the record is dropped and the directory, if any, never trusted)."""
    with open_dir(upload) as upload_fd:
        try:
            staging_fd = os.open(staging.staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, dir_fd=upload_fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise
            # Revealed by a run that died before dropping the record, or not a directory.
            record.drop(staging)
            return None
        try:
            if not staging.is_this(os.fstat(staging_fd)):
                record.drop(staging)
                return None
            for name in staging.files:
                _move_in(upload_fd, staging_fd, name)
            os.fsync(staging_fd)
        finally:
            os.close(staging_fd)
        epoch = rename_with_suffix_at(upload_fd, staging.staging, upload_fd, staging.epoch)
        os.fsync(upload_fd)
    checkpoint("gather: epoch revealed")
    record.drop(staging)
    checkpoint("gather: record dropped")
    return epoch


def _move_in(upload_fd: int, staging_fd: int, name: str) -> None:
    """Move one listed loose file into staging, if it is still a regular file in upload/."""
    if not _is_plain_name(name):
        return
    try:
        st = os.stat(name, dir_fd=upload_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # already moved by a run that crashed
    if not stat.S_ISREG(st.st_mode):
        return
    try:
        rename_noreplace(name, name, upload_fd, staging_fd)
    except FileExistsError:
        return  # already moved by the crashed run, and a new file took its name
    checkpoint("gather: file moved")
