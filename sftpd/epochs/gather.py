"""Loose files in upload/ become one new epoch, named after their newest modification time.

Crash safety: the epoch's name is decided by the files themselves (their newest mtime, which a
rename does not change), the list of files to move is written durably into a hidden staging
directory before anything moves, and the staging directory becomes visible as an epoch with
one rename at the end. A rerun first finishes any staging directory it finds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sftpd.epochs.checkpoints import checkpoint
from sftpd.epochs.completion import newest_change, still_uploading
from sftpd.epochs.fsops import fsync_dir, rename_noreplace, rename_with_suffix, write_atomically
from sftpd.epochs.names import COMPLETION_MARKER, GATHER_LIST, GATHER_PREFIX, WRITING_SUFFIX


@dataclass
class Gathering:
    """What gathering did: new epochs (already known to be settled), or why it waited."""

    epochs: list[str] = field(default_factory=list)
    waiting: str | None = None


def epoch_name_for(files: list[Path]) -> str:
    newest = max(p.lstat().st_mtime for p in files)
    return time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(newest))


def gather_loose_files(upload: Path, settle_seconds: float, now: float) -> Gathering:
    result = Gathering()
    for staging in sorted(upload.glob(GATHER_PREFIX + "*")):
        name = _finish(upload, staging)
        if name is not None:
            result.epochs.append(name)
    loose = sorted(p for p in upload.iterdir()
                   if not p.is_dir() and not p.name.startswith(GATHER_PREFIX))
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
    staging = upload / (GATHER_PREFIX + epoch_name_for(loose))
    staging.mkdir()
    checkpoint("gather: staging directory made")
    write_atomically(staging / GATHER_LIST, "".join(p.name + "\n" for p in loose))
    fsync_dir(staging)
    checkpoint("gather: list written")
    name = _finish(upload, staging)
    if name is not None:
        result.epochs.append(name)
    return result


def _finish(upload: Path, staging: Path) -> str | None:
    """Move the listed files into staging and reveal it as an epoch.

    Without a list, staging is either empty (a crash before the list was durable: remove it,
    return None, gather afresh) or holds every file (a crash after the list was removed,
    which happens only once all were moved: reveal it)."""
    listing = staging / GATHER_LIST
    if not listing.exists():
        (staging / (GATHER_LIST + WRITING_SUFFIX)).unlink(missing_ok=True)
        if not any(staging.iterdir()):
            staging.rmdir()
            return None
    else:
        _move_listed(upload, staging, listing)
    epoch = rename_with_suffix(staging, upload, staging.name[len(GATHER_PREFIX):])
    fsync_dir(upload)
    checkpoint("gather: epoch revealed")
    return epoch.name


def _move_listed(upload: Path, staging: Path, listing: Path) -> None:
    for name in listing.read_text(encoding="utf-8").splitlines():
        if (upload / name).exists() or (upload / name).is_symlink():
            try:
                rename_noreplace(upload / name, staging / name)
            except FileExistsError:
                continue  # already moved by the crashed run, and a new file took its name
            checkpoint("gather: file moved")
    fsync_dir(staging)
    listing.unlink()
    checkpoint("gather: list removed")
