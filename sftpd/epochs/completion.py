"""When an epoch is complete (quiet, nothing open for writing, no temporary names) and what
its content is (the digest that identifies it in the ledger)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sftpd.epochs import walk
from sftpd.epochs.names import COMPLETION_MARKERS, is_reserved, shown
from sftpd.epochs.walk import DEFAULT_LIMITS, Limits
from sftpd.uploads import is_open_for_writing, is_temporary_name


@dataclass(frozen=True)
class Completion:
    """Whether an epoch may be processed now, and why not when it may not."""

    complete: bool
    reason: str


def _entries(epoch: Path, limits: Limits) -> Iterator[Path]:
    """The epoch directory itself and everything under it (not following symlinks); raises
    walk.TreeTooLarge for an epoch beyond the limits."""
    return walk.entries(epoch, limits)


def newest_change(paths: list[Path]) -> float:
    """The latest mtime or ctime among paths (ctime catches files moved in with old mtimes)."""
    newest = 0.0
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        newest = max(newest, st.st_mtime, st.st_ctime)
    return newest


def still_uploading(paths: list[Path]) -> str | None:
    """Why these files are not done yet (a temporary name, or held open for writing)."""
    for path in paths:
        if is_temporary_name(path.name):
            return f"{shown(path.name)} has a temporary upload name"
    for path in paths:
        if path.is_file() and not path.is_symlink() and is_open_for_writing(path):
            return f"{shown(path.name)} is still open for writing"
    return None


def check(epoch: Path, settle_seconds: float, now: float,
          skip_quiet: bool = False, limits: Limits = DEFAULT_LIMITS) -> Completion:
    """An epoch is complete when nothing in it is being written and it has been quiet for
    settle_seconds, or a completion marker is at its top (then quiet is not awaited)."""
    entries = list(_entries(epoch, limits))
    busy = still_uploading(entries)
    if busy is not None:
        return Completion(False, busy)
    if skip_quiet:
        return Completion(True, "forced")
    marker = next((m for m in COMPLETION_MARKERS if walk.is_plain_file(epoch / m)), None)
    if marker is not None:
        return Completion(True, f"{marker} marker")
    quiet = now - newest_change(entries)
    if quiet < settle_seconds:
        return Completion(False, f"last change {quiet:.0f}s ago, settling for "
                                 f"{settle_seconds:g}s")
    return Completion(True, f"quiet for {quiet:.0f}s")


def content_digest(epoch: Path, limits: Limits = DEFAULT_LIMITS) -> str:
    """sha256 over every data file's relative path and bytes (the processor's own files and the
    marker excluded), so a rerun recognizes the same epoch after a crash."""
    total = hashlib.sha256()
    for path in sorted(p for p in _entries(epoch, limits) if p != epoch):
        rel = path.relative_to(epoch)
        if any(is_reserved(part) for part in rel.parts) or not walk.is_plain_file(path):
            continue
        total.update(os.fsencode(rel) + b"\0")  # the name's bytes, UTF-8 or not
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as data:
            total.update(hashlib.file_digest(data, "sha256").digest())
    return "sha256:" + total.hexdigest()
