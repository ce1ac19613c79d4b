"""Loose files in upload/ become new epochs named `YYYYMMDD-HHMMSS` (UTC): `<name>_auto.csv`
files as soon as they are closed, everything else once settled.

Crash safety: the epoch's name is decided before anything moves (the files' newest mtime,
which a rename does not change, moved on by a second while taken) and fixed by the name of a
hidden staging directory; the list of files to move is written durably into it before any
file moves, and the staging directory becomes visible as an epoch with one rename at the end.
A rerun first finishes any staging directory it finds.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from pathlib import Path

from sftpd import tree
from sftpd.epochs.checkpoints import checkpoint
from sftpd.epochs.completion import newest_change, still_uploading
from sftpd.epochs.fsops import fsync_dir, rename_noreplace, rename_with_suffix, write_atomically
from sftpd.epochs.names import (
    AUTO_STAGING,
    COMPLETION_MARKER,
    COMPLETION_MARKERS,
    EPOCH_NAME_FORMAT,
    GATHER_LIST,
    GATHER_PREFIX,
    GATHERED_FROM,
    WRITING_SUFFIX,
    auto_target,
)
from sftpd.uploads import TEMPORARY_SUFFIXES, is_temporary_name

# How far past a taken name (one second at a time) gathering looks for a free one.
_NAME_TRIES = 3600


@dataclass
class Gathering:
    """What gathering did: new epochs (already known to be complete), or why it waited."""

    epochs: list[str] = field(default_factory=list)
    waiting: str | None = None


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


def gather_loose_files(upload: Path, settle_seconds: float, now: float) -> Gathering:
    result = Gathering()
    for staging in sorted(upload.glob(GATHER_PREFIX + "*")):
        name = _finish(upload, staging)
        if name is not None:
            result.epochs.append(name)
    loose = sorted(p for p in upload.iterdir()
                   if not p.is_dir() and not p.name.startswith(GATHER_PREFIX))
    auto = [p for p in loose if is_auto_upload(p.name)]
    if auto:
        # All `_auto` uploads in flight are awaited, so that a students_auto.csv and the
        # guardians_auto.csv uploaded right after it land in one epoch (one load).
        busy = still_uploading(auto)
        if busy is not None:
            result.waiting = busy
        else:
            result.epochs.append(_gather(upload, auto, auto=True))
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
    name = _gather(upload, others, auto=False)
    result.epochs.append(name)
    return result


def _gather(upload: Path, files: list[Path], auto: bool) -> str:
    """Stage, move and reveal one new epoch; its name."""
    name = _free_name(upload, epoch_name_for(files))
    staging = upload / (GATHER_PREFIX + (AUTO_STAGING if auto else "") + name)
    staging.mkdir()
    checkpoint("gather: staging directory made")
    write_atomically(staging / GATHER_LIST, "".join(p.name + "\n" for p in files))
    fsync_dir(staging)
    checkpoint("gather: list written")
    revealed = _finish(upload, staging)
    assert revealed is not None  # the list exists, so the epoch is revealed
    return revealed


def _taken(upload: Path, name: str) -> bool:
    processed = upload.parent / tree.UPLOAD_PROCESSED
    return any(p.exists() or p.is_symlink() for p in (
        upload / name, processed / name, upload / (GATHER_PREFIX + name),
        upload / (GATHER_PREFIX + AUTO_STAGING + name)))


def _later(name: str, seconds: int) -> str | None:
    """The epoch name `seconds` after name, or None for a name not in the epoch format."""
    try:
        moment = calendar.timegm(time.strptime(name, EPOCH_NAME_FORMAT))
    except ValueError:
        return None
    return time.strftime(EPOCH_NAME_FORMAT, time.gmtime(moment + seconds))


def _free_name(upload: Path, name: str) -> str:
    """name, or the first later second not yet used in upload/ or upload-processed/: two
    gatherings within one second stay in the documented format and in upload order."""
    for step in range(_NAME_TRIES):
        candidate = _later(name, step) if step else name
        if candidate is None:
            break
        if not _taken(upload, candidate):
            return candidate
    return name  # (revealed with a numbered suffix instead)


def _finish(upload: Path, staging: Path) -> str | None:
    """Move the listed files into staging and reveal it as an epoch.

    Without a list, staging is either empty (a crash before the list was durable: remove it,
    return None, gather afresh) or holds every file (a crash after the list was renamed to
    its record, which happens only once all were moved: reveal it)."""
    listing = staging / GATHER_LIST
    label = staging.name[len(GATHER_PREFIX):]
    auto = label.startswith(AUTO_STAGING)
    if auto:
        label = label[len(AUTO_STAGING):]
    if not listing.exists():
        (staging / (GATHER_LIST + WRITING_SUFFIX)).unlink(missing_ok=True)
        if not any(staging.iterdir()):
            staging.rmdir()
            return None
    else:
        _move_listed(upload, staging, listing, auto)
    epoch = _reveal(staging, upload, label)
    fsync_dir(upload)
    checkpoint("gather: epoch revealed")
    return epoch.name


def _reveal(staging: Path, upload: Path, name: str) -> Path:
    """Rename staging to upload/name, or to the next free second if a directory of that name
    appeared meanwhile (the district may make one)."""
    for step in range(_NAME_TRIES):
        candidate = _later(name, step) if step else name
        if candidate is None:
            break
        try:
            rename_noreplace(staging, upload / candidate)
        except FileExistsError:
            continue
        return upload / candidate
    return rename_with_suffix(staging, upload, name)


def _move_listed(upload: Path, staging: Path, listing: Path, auto: bool) -> None:
    if auto:
        # The server's own marker: the epoch is complete once revealed, on any later run too.
        (staging / COMPLETION_MARKER).touch()
    for name in listing.read_text(encoding="utf-8").splitlines():
        target = (auto_target(name) or name) if auto else name
        if (upload / name).exists() or (upload / name).is_symlink():
            try:
                rename_noreplace(upload / name, staging / target)
            except FileExistsError:
                continue  # already moved by the crashed run, and a new file took its name
            checkpoint("gather: file moved")
    fsync_dir(staging)
    listing.rename(staging / GATHERED_FROM)
    fsync_dir(staging)
    checkpoint("gather: list removed")


def gathered_note(epoch: Path) -> str:
    """For the processing log: the names the files of a gathered epoch had in upload/."""
    record = epoch / GATHERED_FROM
    if not record.is_file() or record.is_symlink():
        return ""
    names = record.read_text(encoding="utf-8", errors="replace").splitlines()
    shown = [f"{n} (as {auto_target(n)})" if auto_target(n) and not (epoch / n).exists()
             else n for n in names]
    return "gathered from loose files in upload/: " + ", ".join(shown)
