"""The upload contract between the SFTP server and the epoch processor: who is still writing what.

While `sftpd serve` holds a file open for writing it keeps an exclusive BSD lock
(`flock(LOCK_EX)`) on that open file, taken right after the open and released by the close
(or by the kernel when the server dies, so a crash never leaves a stale "still uploading"
mark behind). The epoch processor, which runs in another process on the same volume, treats a
file as still being written when a non-blocking shared lock on it fails. `flock` locks are held
by the kernel that owns the volume mount, so both sides must see the volume through the same
node (ReadWriteOnce: the operator schedules the jobs onto the SFTP pod's node) or through a
file system that forwards them (NFSv4 forwards flock as byte-range locks).

Clients that upload to a temporary name and rename on completion (WinSCP's `*.filepart`,
lftp's and curl's `*.part`, ...) are covered separately: the processor never treats an epoch
holding such a name as complete (see TEMPORARY_SUFFIXES).

A second lock keeps the two sides from working on the same epoch at once. The processor holds
an exclusive lock on an epoch's directory (`claimed`) from before it checks that the epoch is
complete until the epoch has moved to upload-processed/, and on upload/ itself while it gathers
loose files. The server holds a shared lock on the epoch directory (upload/ for a name directly
in it) for as long as a file in it is open for writing, and for the length of every other
change it makes there (mkdir, remove, rename, setstat). So a write handle can never be opened
into an epoch being processed (the open is refused as busy), and an epoch with a write handle
open is never moved (it stays pending): nothing under upload-processed/ is ever written through
a handle, whenever that handle was opened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

# Names that clients use while a transfer is in flight (an epoch containing one is incomplete)
# are the contract's: the plugin's probe uses one too.
from district_contract.layout import TEMPORARY_SUFFIXES


def hold_write_lock(fd: int) -> None:
    """Mark the open file behind fd as being written, until fd is closed."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


# What flock on a directory fails with where the file system cannot lock one (the Linux NFS
# client emulates flock with byte-range locks, and an exclusive one needs a writable descriptor,
# which a directory never has): both sides then go on without the epoch lock.
_NO_DIRECTORY_LOCKS = (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


def share_epoch(dir_fd: int) -> None:
    """Server: mark the epoch directory behind dir_fd as being changed, until dir_fd is closed;
    BlockingIOError while the processor has claimed it."""
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_LOCKS:
            raise


@contextlib.contextmanager
def claimed(directory: Path) -> Iterator[bool]:
    """Processor: hold directory (an epoch, or upload/ for loose files) against any change over
    SFTP for the length of the block; False, and nothing held, while the server is changing it
    (or when it is gone)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        yield False  # removed or replaced over SFTP since it was listed
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            ours = True
        except BlockingIOError:
            ours = False
        except OSError as exc:
            if exc.errno not in _NO_DIRECTORY_LOCKS:
                raise
            ours = True  # no directory locks here: the per-file write locks alone guard
        yield ours
    finally:
        os.close(fd)


def is_open_for_writing(path: Path) -> bool:
    """True when some process holds the file open for writing under the contract above."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            return False
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops our own probe lock
    return False


def is_temporary_name(name: str) -> bool:
    """True for a file name that a client uses only while an upload is in flight."""
    return name.lower().endswith(TEMPORARY_SUFFIXES)
