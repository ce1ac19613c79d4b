"""Loose files in upload/ become new epochs named `YYYYMMDD-HHMMSS` (UTC): `<name>_auto.csv`
files as soon as they are closed, everything else once settled.

Crash safety: the epoch's name is decided before anything moves (the files' newest mtime,
which a rename does not change, moved on by a second while taken). A hidden staging directory
is made and recorded, with the names of the files to move, in the district's database
(`stagings`) before anything moves; the files are renamed in (`_auto` ones under their name
without `_auto`, with the server's own COMPLETE), the names they had are written into it as
`.sftpd-gathered-from`, and the staging directory becomes visible as an epoch with one rename
at the end. A rerun first finishes every recorded staging directory.

Trust: upload/ is the district's to write, so the processor acts only on the staging directories
its record names, checked to be the very directory it made (device and inode, opened without
following links), and moves only names that are one plain path component of a regular file
directly in upload/, between open directory fds. A `.sftpd-gather-*` entry it did not make (an
`_auto` one too) is left alone (an empty directory is removed: it may be a run's own, made just
before a crash). Whether a staging directory holds `_auto` files is read from its recorded name,
never from anything in upload/.
"""

from __future__ import annotations

import calendar
import errno
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from district_contract.layout import TEMPORARY_SUFFIXES

from sftpd import tree
from sftpd.epochs import walk
from sftpd.epochs.checkpoints import checkpoint
from sftpd.epochs.completion import newest_change, still_uploading
from sftpd.epochs.fsops import (
    open_dir,
    rename_noreplace,
    rename_with_suffix_at,
    write_atomically_at,
)
from sftpd.epochs.names import (
    AUTO_STAGING,
    COMPLETION_MARKER,
    COMPLETION_MARKERS,
    EPOCH_NAME_FORMAT,
    GATHER_PREFIX,
    GATHERED_FROM,
    auto_target,
    shown,
)
from sftpd.epochs.stagings import Record, Staging
from sftpd.uploads import is_temporary_name

# How far past a taken name (one second at a time) gathering looks for a free one.
_NAME_TRIES = 3600
# The most of a `.sftpd-gathered-from` the processing log's note reads (the district can write
# into an epoch, so the file may be anything).
_GATHERED_FROM_MAX_BYTES = 64 * 1024


@dataclass
class Gathering:
    """What gathering did: new epochs (already known to be complete), or why it waited, and the
    staging-like names in upload/ it did not make (left alone, for staff)."""

    epochs: list[str] = field(default_factory=list)
    waiting: str | None = None
    untrusted: list[str] = field(default_factory=list)
    # Why the loose files are not gathered at all (too many), for staff.
    refused: str | None = None


def epoch_name_for(files: list[Path]) -> str:
    newest = max(p.lstat().st_mtime for p in files)
    return time.strftime(EPOCH_NAME_FORMAT, time.gmtime(newest))


def is_auto_upload(name: str) -> bool:
    """A `<name>_auto.csv`, or one still in flight under a client's temporary name."""
    if auto_target(name) is not None:
        return True
    lower = name.lower()
    return is_temporary_name(name) and any(
        auto_target(name[: -len(s)]) is not None for s in TEMPORARY_SUFFIXES
        if lower.endswith(s))


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
    auto = [p for p in loose if is_auto_upload(p.name)]
    if auto:
        # All `_auto` uploads in flight are awaited, so that a students_auto.csv and the
        # guardians_auto.csv uploaded right after it land in one epoch (one load).
        busy = still_uploading(auto)
        if busy is not None:
            result.waiting = busy
        else:
            name = _gather(upload, auto, record, auto=True)
            if name is not None:
                result.epochs.append(name)
    others = [p for p in loose if not is_auto_upload(p.name)]
    if not others:
        return result
    busy = still_uploading(others)
    if busy is not None:
        result.waiting = result.waiting or busy
        return result
    marked = any(p.name in COMPLETION_MARKERS for p in others)
    quiet = now - newest_change(others)
    if not marked and quiet < settle_seconds:
        result.waiting = result.waiting or (f"last change {quiet:.0f}s ago, settling for "
                                            f"{settle_seconds:g}s")
        return result
    name = _gather(upload, others, record, auto=False)
    if name is not None:
        result.epochs.append(name)
    return result


def _gather(upload: Path, files: list[Path], record: Record, auto: bool) -> str | None:
    """Make, record, fill and reveal one new epoch; its name (None if it vanished meanwhile)."""
    with open_dir(upload) as upload_fd:
        made, epoch = _make_staging(upload_fd, upload, epoch_name_for(files), auto)
        checkpoint("gather: staging directory made")
        st = os.stat(made, dir_fd=upload_fd, follow_symlinks=False)
    staging = Staging(made, epoch, st.st_dev, st.st_ino, [p.name for p in files])
    record.add(staging)
    checkpoint("gather: staging recorded")
    return _finish(upload, staging, record)


def _taken(upload: Path, name: str) -> bool:
    """Whether an epoch of that name is in upload/ or upload-processed/ already."""
    processed = upload.parent / tree.UPLOAD_PROCESSED
    return os.path.lexists(upload / name) or os.path.lexists(processed / name)


def _later(name: str, seconds: int) -> str | None:
    """The epoch name `seconds` after name, or None for a name not in the epoch format."""
    try:
        moment = calendar.timegm(time.strptime(name, EPOCH_NAME_FORMAT))
    except ValueError:
        return None
    return time.strftime(EPOCH_NAME_FORMAT, time.gmtime(moment + seconds))


def _candidates(name: str) -> list[str]:
    """name, then each later second: two gatherings within one second stay in the documented
    format and in upload order."""
    found = [name]
    for step in range(1, _NAME_TRIES):
        later = _later(name, step)
        if later is None:
            break
        found.append(later)
    return found


def _make_staging(upload_fd: int, upload: Path, epoch: str, auto: bool) -> tuple[str, str]:
    """A new, empty staging directory, and the epoch it becomes: epoch, or the first later
    second not yet used in upload/ or upload-processed/. When the staging name is taken by
    anything (not the processor's: every recorded one is finished by now), a numbered suffix
    is added to the staging directory's name, the epoch's stays."""
    prefix = GATHER_PREFIX + (AUTO_STAGING if auto else "")
    name = next((c for c in _candidates(epoch) if not _taken(upload, c)), epoch)
    for attempt in range(10_000):
        staging = prefix + name + ("" if attempt == 0 else f".{attempt}")
        try:
            os.mkdir(staging, 0o755, dir_fd=upload_fd)
        except FileExistsError:
            continue
        return staging, name
    raise FileExistsError(f"no free staging name for {name}")


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


def _is_auto(staging: Staging) -> bool:
    """Whether a recorded staging directory gathers `_auto` files (from its recorded name)."""
    return staging.staging.startswith(GATHER_PREFIX + AUTO_STAGING)


def _finish(upload: Path, staging: Staging, record: Record) -> str | None:
    """Move the recorded files into the recorded staging directory and reveal it as an epoch;
    the epoch's name, or None when the directory is gone or is not the one the processor
    made (then the record is dropped and the directory, if any, never trusted)."""
    auto = _is_auto(staging)
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
                target = (auto_target(name) or name) if auto else name
                _move_in(upload_fd, staging_fd, name, target)
            if auto:
                # The server's own marker: the epoch is complete once revealed, on any later
                # run too.
                write_atomically_at(staging_fd, COMPLETION_MARKER, b"")
            # What the files were called in upload/, for the processing log (from the record).
            write_atomically_at(staging_fd, GATHERED_FROM, "".join(
                _line(name) for name in staging.files).encode("utf-8"))
            os.fsync(staging_fd)
            checkpoint("gather: names written")
        finally:
            os.close(staging_fd)
        epoch = _reveal(upload_fd, staging.staging, staging.epoch)
        os.fsync(upload_fd)
    checkpoint("gather: epoch revealed")
    record.drop(staging)
    checkpoint("gather: record dropped")
    return epoch


def _line(name: str) -> str:
    """One name of `.sftpd-gathered-from`: undecodable bytes and line breaks escaped."""
    return shown(name).replace("\n", "\\n").replace("\r", "\\r") + "\n"


def _reveal(upload_fd: int, staging: str, name: str) -> str:
    """Rename staging to name, or to the next free second if an entry of that name appeared
    meanwhile (the district may make one), or name.1, ... for a name not in the epoch format."""
    for candidate in _candidates(name):
        try:
            rename_noreplace(staging, candidate, upload_fd, upload_fd)
        except FileExistsError:
            continue
        return candidate
    return rename_with_suffix_at(upload_fd, staging, upload_fd, name)


def _move_in(upload_fd: int, staging_fd: int, name: str, target: str) -> None:
    """Move one listed loose file into staging as target, if it is still a regular file in
    upload/."""
    if not _is_plain_name(name) or not _is_plain_name(target):
        return
    try:
        st = os.stat(name, dir_fd=upload_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # already moved by a run that crashed
    if not stat.S_ISREG(st.st_mode):
        return
    try:
        rename_noreplace(name, target, upload_fd, staging_fd)
    except FileExistsError:
        return  # already moved by the crashed run, and a new file took its name
    checkpoint("gather: file moved")


def gathered_note(epoch: Path) -> str:
    """For the processing log: the names the files of a gathered epoch had in upload/ (read
    without following a link, up to a bound; anything odd there gives no note)."""
    try:
        fd = os.open(epoch / GATHERED_FROM,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as record:
        if not stat.S_ISREG(os.fstat(record.fileno()).st_mode):
            return ""
        data = record.read(_GATHERED_FROM_MAX_BYTES)
    names = data.decode("utf-8", errors="replace").splitlines()
    if not names:
        return ""
    shown_names = [f"{n} (as {target})"
                   if (target := auto_target(n)) and not os.path.lexists(epoch / n) else n
                   for n in names]
    return "gathered from loose files in upload/: " + ", ".join(shown_names)
