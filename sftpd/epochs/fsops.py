"""File-system steps that must be atomic: write-then-rename, and rename that never overwrites."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from sftpd.epochs.names import WRITING_SUFFIX

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename src to dst in one step, failing with FileExistsError if dst exists (even as an
    empty directory, which plain rename(2) would silently replace)."""
    result = _libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                             _RENAME_NOREPLACE)
    if result != 0:
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(dst))
        raise OSError(code, os.strerror(code), str(src))


def rename_with_suffix(src: Path, parent: Path, name: str) -> Path:
    """Move src to parent/name, or parent/name.1, name.2, ... when taken; never overwrite."""
    for attempt in range(10_000):
        candidate = parent / (name if attempt == 0 else f"{name}.{attempt}")
        try:
            rename_noreplace(src, candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free name for {name} in {parent}")


def write_atomically(path: Path, text: str) -> None:
    """Replace path's content in one step: readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + WRITING_SUFFIX)
    with tmp.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def fsync_dir(path: Path) -> None:
    """Make renames inside path durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
