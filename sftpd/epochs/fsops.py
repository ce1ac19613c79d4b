"""File-system steps that must be atomic: write-then-rename, and rename that never overwrites.

Every step works relative to an open directory and never follows a symbolic link, so a link
planted in the upload tree (or a directory swapped for one) cannot send the processor outside it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sftpd.epochs.names import DISPLACED_SUFFIX, WRITING_SUFFIX

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def open_dir(path: Path | str, dir_fd: int | None = None) -> Iterator[int]:
    """An fd for a directory that is really one (not a link to one), closed afterwards."""
    fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def rename_noreplace(src: Path | str, dst: Path | str, src_dir: int = _AT_FDCWD,
                     dst_dir: int = _AT_FDCWD) -> None:
    """Rename src to dst in one step, failing with FileExistsError if dst exists (even as an
    empty directory, which plain rename(2) would silently replace). Relative names are taken
    in src_dir and dst_dir (open directory fds) when given."""
    result = _libc.renameat2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst),
                             _RENAME_NOREPLACE)
    if result != 0:
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(dst))
        raise OSError(code, os.strerror(code), str(src))


def rename_with_suffix(src: Path, parent: Path, name: str) -> Path:
    """Move src to parent/name, or parent/name.1, name.2, ... when taken; never overwrite."""
    with open_dir(src.parent) as src_dir, open_dir(parent) as dst_dir:
        return parent / rename_with_suffix_at(src_dir, src.name, dst_dir, name)


def rename_with_suffix_at(src_dir: int, src: str, dst_dir: int, name: str,
                          suffix: str = "") -> str:
    """rename_with_suffix between open directories: the name the entry got
    (`name`, `name.1`, ... each followed by suffix)."""
    for attempt in range(10_000):
        candidate = (name if attempt == 0 else f"{name}.{attempt}") + suffix
        try:
            rename_noreplace(src, candidate, src_dir, dst_dir)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free name for {name}")


def write_atomically(path: Path, text: str) -> None:
    """Replace path's content in one step: readers see the old file or the whole new one.

    Whatever stands in the way is dealt with first, since the processor owns these names: a
    stale temporary file or a link is removed (a link is never written through), anything
    else that is not a regular file (a directory the district made) is renamed aside with
    DISPLACED_SUFFIX, kept."""
    with open_dir(path.parent) as parent:
        write_atomically_at(parent, path.name, text.encode("utf-8"))


def write_atomically_at(parent: int, name: str, data: bytes) -> None:
    """write_atomically for `name` in an open directory, with the content as bytes."""
    tmp = name + WRITING_SUFFIX
    _clear_for_file(parent, tmp)
    _clear_for_file(parent, name, remove=False)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644, dir_fd=parent)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)


def _clear_for_file(parent: int, name: str, remove: bool = True) -> None:
    """Make `name` in parent free for a regular file: missing or a regular file is fine (or,
    with remove, unlinked); a link is unlinked; anything else is renamed aside."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or (remove and stat.S_ISREG(st.st_mode)):
        os.unlink(name, dir_fd=parent)
    elif not stat.S_ISREG(st.st_mode):
        rename_with_suffix_at(parent, name, parent, name, DISPLACED_SUFFIX)


def fsync_dir(path: Path) -> None:
    """Make renames inside path durable."""
    with open_dir(path) as fd:
        os.fsync(fd)
