"""What a district may do to its tree over SFTP/scp: read everywhere, write only inside /upload."""

# Paths stay bytes end to end (a district may upload names that are not UTF-8), so this module
# uses os/os.path rather than pathlib throughout.
# ruff: noqa: PTH101

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPName
from asyncssh.sftp import (
    MAX_SFTP_PACKET_LEN,
    MAX_SFTP_READ_LEN,
    MAX_SFTP_WRITE_LEN,
    SFTPLimits,
    SFTPServerHandler,
)

from sftpd import tree
from sftpd.epochs.names import (
    GATHER_PREFIX,
    GATHERED_FROM,
    PROCESSING_JSON,
    PROCESSING_LOG,
    PULL_PREFIX,
    WRITING_SUFFIX,
)
from sftpd.server import beneath
from sftpd.server.audit import BYTES_IN, BYTES_OUT, ERRORS, OPERATIONS, AuditLog
from sftpd.uploads import hold_write_lock, share_epoch

# Longer than any real client path; refusing early keeps the error an SFTP one, not ENAMETOOLONG.
MAX_PATH_BYTES = 4096
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# What the server announces in limits@openssh.com (and SFTPv5+ `supported`) as the longest READ.
MAX_READ = MAX_SFTP_READ_LEN
# Replies a session may have queued and not yet sent (its client's window shut) before its next
# READ waits for them to go out: four of the longest READs, more than a fast client ever has.
REPLY_BACKLOG = 4 * MAX_READ
# copy-data works in pieces of this size and lets other sessions run between them.
COPY_CHUNK = 1 << 20
# Names only the epoch processor and `sftpd sif-pull` make under /upload (their staging
# directories and lists, files still being written): a district that could make them could
# steer the processor, or have a pull's next run remove them as its leftovers.
_PROCESSOR_PREFIXES = (GATHER_PREFIX.encode(), PULL_PREFIX.encode())
_PROCESSOR_SUFFIXES = (WRITING_SUFFIX.encode(),)
# Names the processor writes as files into an epoch: a directory so named would stop it.
_PROCESSOR_FILES = frozenset({PROCESSING_LOG.encode(), PROCESSING_JSON.encode(),
                              GATHERED_FROM.encode()})


@dataclass(frozen=True)
class SessionLimits:
    """What one SFTP session may hold and write."""

    max_open_handles: int = 64
    max_file_size: int = 64 << 30


class OpenFile:
    """One file handle of one session: a raw descriptor, read with pread and written with pwrite."""

    __slots__ = ("append", "bytes_read", "bytes_written", "failed", "fd", "held", "keep_size",
                 "limit_logged", "local", "path", "size_limit", "writable")

    def __init__(self, fd: int, path: str, local: bytes, writable: bool) -> None:
        self.fd = fd
        self.path = path
        self.local = local
        self.writable = writable
        self.bytes_read = 0
        self.bytes_written = 0
        self.failed = False
        self.append = False
        # Epoch directory locks held while the handle is open (see sftpd.uploads).
        self.held: list[int] = []
        # The size the file had before this handle, when it existed and was not truncated:
        # an interrupted session gives back only what it added. None: the session made it.
        self.keep_size: int | None = None
        self.size_limit = 0
        self.limit_logged = False

    def fileno(self) -> int:
        return self.fd


def _denied(op: str, reason: str) -> asyncssh.SFTPPermissionDenied:
    ERRORS.labels(op, "denied").inc()
    return asyncssh.SFTPPermissionDenied(reason)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


def _is_processor_name(name: bytes) -> bool:
    return name.startswith(_PROCESSOR_PREFIXES) or name.endswith(_PROCESSOR_SUFFIXES)


def allowed_mode(requested: int, directory: bool) -> int:
    """Permission bits a district may set: never set-id or sticky, and always enough for the
    owner (the server and the processor) to read, write and, for a directory, enter it."""
    return (requested & 0o777) | (0o700 if directory else 0o600)


class DistrictSFTPServer(asyncssh.SFTPServer):
    """asyncssh's chrooted SFTP server with the district's write rules and link containment.

    asyncssh's `chroot` maps client paths into the root; on top of that every path is resolved
    with realpath and refused unless it stays inside the root, so a symbolic link planted in the
    tree (the district cannot create one, but staff or a bug could) never leads outside it.
    Every file system call then goes through a descriptor opened beneath the root's descriptor
    with no link followed on the way (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or a walk
    with O_NOFOLLOW per directory), so a link swapped in for any component after the check, a
    directory as much as the file itself, makes the call fail instead of leading out.
    """

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], root: bytes, root_fd: int,
                 audit: AuditLog, session_fields: dict[str, Any], touch: Callable[[], None],
                 limits: SessionLimits | None = None, read_only: bool = False) -> None:
        super().__init__(chan, chroot=root)
        # A key with command="internal-sftp -R" (district_contract.keyoptions): no write at all.
        self._read_only = read_only
        self._root = os.path.realpath(root)
        self._root_fd = root_fd
        self._upload = posixpath.join(self._root, tree.UPLOAD.encode())
        self._audit = audit
        self._fields = session_fields
        self._touch = touch
        self.limits = limits or SessionLimits()
        self._open_files: set[OpenFile] = set()
        self._open_dirs = 0

    # -- path resolution -------------------------------------------------------------------

    def _inside(self, local: bytes) -> bool:
        return local == self._root or local.startswith(self._root + b"/")

    def _in_upload(self, local: bytes) -> bool:
        """Strictly below /upload: /upload itself can be neither removed nor renamed."""
        return local.startswith(self._upload + b"/")

    def _mapped(self, op: str, path: bytes) -> bytes:
        self._touch()
        OPERATIONS.labels(op).inc()
        if b"\0" in path:
            ERRORS.labels(op, "invalid").inc()
            raise asyncssh.SFTPNoSuchFile("Invalid path")
        if len(path) > MAX_PATH_BYTES:
            ERRORS.labels(op, "invalid").inc()
            raise asyncssh.SFTPNoSuchFile("Path too long")
        return self.map_path(path)

    def _follow(self, op: str, path: bytes) -> bytes:
        """The path with every link resolved; refused unless it stays inside the root."""
        real = os.path.realpath(self._mapped(op, path))
        if not self._inside(real):
            raise _denied(op, "Path leads outside the root")
        return real

    def _nofollow(self, op: str, path: bytes) -> bytes:
        """The path with its parent resolved and its last component kept as is (lstat, remove)."""
        # asyncssh maps `/` to the root with a trailing slash; `..` it has resolved already.
        mapped = posixpath.normpath(self._mapped(op, path))
        if mapped == self._root:
            return mapped
        parent, name = posixpath.split(mapped)
        real_parent = os.path.realpath(parent)
        if not self._inside(real_parent):
            raise _denied(op, "Path leads outside the root")
        return posixpath.join(real_parent, name)

    def _rel(self, local: bytes) -> bytes:
        return local[len(self._root) + 1:]

    def _open(self, local: bytes, flags: int, mode: int = 0) -> int:
        """local (a resolved path inside the root) opened beneath the root, no link followed."""
        return beneath.open_beneath(self._root_fd, self._rel(local), flags, mode)

    @contextlib.contextmanager
    def _parent(self, local: bytes) -> Iterator[tuple[int, bytes]]:
        """local's directory opened beneath the root, and local's name in it (for *at calls)."""
        dir_fd, name = beneath.open_parent(self._root_fd, self._rel(local))
        try:
            yield dir_fd, name
        finally:
            os.close(dir_fd)

    def _virtual(self, local: bytes) -> str:
        # surrogateescape keeps a name that is not UTF-8 distinct from every other name; the
        # audit log writes such a name readably plus its exact bytes (sftpd/server/audit.py).
        return self.reverse_map_path(local).decode("utf-8", "surrogateescape")

    def _log(self, event: str, **fields: Any) -> None:
        self._audit.event(event, **self._fields, **fields)

    def _writable(self, op: str, local: bytes, directory: bool = False) -> None:
        """Refuse a change outside /upload, or one that makes or touches a processor's name."""
        if self._read_only:
            self._log("request.denied", op=op,
                      path=self._virtual(local) if self._inside(local) else "?",
                      reason="read_only_key")
            raise _denied(op, "Read-only: this key may not change anything")
        if not self._in_upload(local):
            self._log("request.denied", op=op,
                      path=self._virtual(local) if self._inside(local) else "?")
            raise _denied(op, f"Read-only: only /{tree.UPLOAD}/ is writable")
        names = local[len(self._upload) + 1:].split(b"/")
        if any(_is_processor_name(name) for name in names) or \
                (directory and names[-1] in _PROCESSOR_FILES):
            self._log("request.denied", op=op, path=self._virtual(local), reason="reserved_name")
            raise _denied(op, "Reserved name: the epoch processor uses it")

    def _scopes(self, local: bytes) -> list[bytes]:
        """The epoch directories a change to local must share-lock (sftpd.uploads): the epoch
        it is in, or for a name directly in /upload, /upload and that name if a directory."""
        names = local[len(self._upload) + 1:].split(b"/")
        top = posixpath.join(self._upload, names[0])
        if len(names) > 1:
            return [top]
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(top).st_mode):
                return [self._upload, top]
        return [self._upload]

    def _share(self, op: str, *locals_: bytes) -> list[int]:
        """Share-lock the epochs of locals_ (refused while the processor has one claimed)."""
        held: list[int] = []
        try:
            for scope in sorted({s for local in locals_ for s in self._scopes(local)}):
                try:
                    fd = self._open(scope, os.O_RDONLY | os.O_DIRECTORY)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # nothing there to protect; the change itself will fail
                held.append(fd)
                share_epoch(fd)
        except BlockingIOError:
            _close_all(held)
            ERRORS.labels(op, "busy").inc()
            self._log("request.denied", op=op, path=self._virtual(locals_[0]), reason="processing")
            raise asyncssh.SFTPFailure("The epoch is being processed; try again later") from None
        except BaseException:
            _close_all(held)
            raise
        return held

    @contextlib.contextmanager
    def _changing(self, op: str, *locals_: bytes) -> Iterator[None]:
        held = self._share(op, *locals_)
        try:
            yield
        finally:
            _close_all(held)

    def _admit_handle(self, op: str, path: str) -> None:
        if len(self._open_files) + self._open_dirs >= self.limits.max_open_handles:
            ERRORS.labels(op, "too_many_handles").inc()
            self._log("request.denied", op=op, path=path, reason="too_many_handles",
                      limit=self.limits.max_open_handles)
            raise asyncssh.SFTPFailure(
                f"Too many open handles in this session (at most "
                f"{self.limits.max_open_handles}); close some first")

    # -- reading -----------------------------------------------------------------------------

    def realpath(self, path: bytes) -> bytes:
        return self.reverse_map_path(self._follow("realpath", path))

    def _stat_beneath(self, local: bytes) -> os.stat_result:
        fd = self._open(local, os.O_PATH)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def stat(self, path: bytes) -> os.stat_result:
        return self._stat_beneath(self._follow("stat", path))

    def lstat(self, path: bytes) -> os.stat_result:
        local = self._nofollow("lstat", path)
        if local == self._root:
            return os.fstat(self._root_fd)
        with self._parent(local) as (dir_fd, name):
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)

    def fstat(self, file_obj: object) -> os.stat_result:
        assert isinstance(file_obj, OpenFile)
        return os.fstat(file_obj.fd)

    def readlink(self, path: bytes) -> bytes:
        # Report where a link leads only when that place is inside the root.
        local = self._nofollow("readlink", path)
        target = os.path.realpath(local)
        if not self._inside(target):
            raise _denied("readlink", "Link leads outside the root")
        return self.reverse_map_path(target)

    def statvfs(self, path: bytes) -> os.statvfs_result:
        fd = self._open(self._follow("statvfs", path), os.O_PATH)
        try:
            return os.fstatvfs(fd)
        finally:
            os.close(fd)

    def fstatvfs(self, file_obj: object) -> os.statvfs_result:
        assert isinstance(file_obj, OpenFile)
        return os.fstatvfs(file_obj.fd)

    # Listings name owners by number, as OpenSSH's chrooted internal-sftp does (no passwd file in
    # the chroot): it tells a district nothing about the server's accounts, and spares two
    # passwd/group lookups per directory entry (about 23 us each, 5% of a session's CPU).

    def format_user(self, uid: int | None) -> str:
        return "" if uid is None else str(uid)

    def format_group(self, gid: int | None) -> str:
        return "" if gid is None else str(gid)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        local = self._follow("scandir", path)
        # A listing holds a descriptor from its first READDIR until it is read or closed.
        self._admit_handle("opendir", self._virtual(local))
        fd = self._open(local, os.O_RDONLY | os.O_DIRECTORY)
        self._open_dirs += 1
        try:
            here = os.fstat(fd)
            up = here if local == self._root else os.stat(b"..", dir_fd=fd)
            yield SFTPName(b".", attrs=SFTPAttrs.from_local(here))
            yield SFTPName(b"..", attrs=SFTPAttrs.from_local(up))
            with os.scandir(fd) as entries:
                for entry in entries:
                    # Listing a descriptor gives str names (surrogate-escaped): back to bytes.
                    yield SFTPName(os.fsencode(entry.name), attrs=SFTPAttrs.from_local(
                        entry.stat(follow_symlinks=False)))
        finally:
            self._open_dirs -= 1
            os.close(fd)

    # -- files -------------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> OpenFile:
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT
                                 | asyncssh.FXF_TRUNC))
        local = self._follow("open", path)
        if not writing:
            self._admit_handle("open", self._virtual(local))
            fd = self._open(local, os.O_RDONLY)
            handle = OpenFile(fd, self._virtual(local), local, writable=False)
            self._open_files.add(handle)
            self._log("file.opened", path=handle.path, mode="read")
            return handle
        self._writable("open", local)
        self._admit_handle("open", self._virtual(local))
        held = self._share("open", local)
        try:
            return self._open_for_writing(local, pflags, attrs, held)
        except BaseException:
            _close_all(held)
            raise

    def _open_for_writing(self, local: bytes, pflags: int, attrs: SFTPAttrs,
                          held: list[int]) -> OpenFile:
        flags = os.O_RDWR if pflags & asyncssh.FXF_READ else os.O_WRONLY
        if pflags & asyncssh.FXF_APPEND:
            flags |= os.O_APPEND
        perms = 0o644 if attrs.permissions is None else allowed_mode(attrs.permissions & 0o666,
                                                                      directory=False)
        fd, created = self._create_or_open(local, flags, pflags, perms)
        try:
            hold_write_lock(fd)
        except BlockingIOError:
            os.close(fd)
            self._log("request.denied", op="open", path=self._virtual(local), reason="busy")
            ERRORS.labels("open", "busy").inc()
            raise asyncssh.SFTPFailure("File is being written by another session") from None
        # Truncate only after the lock is ours, so a second writer can never wipe an upload
        # another session is still writing.
        truncated = bool(pflags & asyncssh.FXF_TRUNC)
        if truncated:
            os.ftruncate(fd, 0)
        handle = OpenFile(fd, self._virtual(local), local, writable=True)
        handle.append = bool(pflags & asyncssh.FXF_APPEND)
        handle.held = held
        handle.keep_size = None if created or truncated else os.fstat(fd).st_size
        volume = os.fstatvfs(fd)
        handle.size_limit = min(self.limits.max_file_size, volume.f_blocks * volume.f_frsize)
        self._open_files.add(handle)
        self._log("file.opened", path=handle.path, mode="write")
        return handle

    def _create_or_open(self, local: bytes, flags: int, pflags: int,
                        perms: int) -> tuple[int, bool]:
        """Open for writing, and whether this open created the file (O_EXCL tells, not a
        separate existence check that could race)."""
        if not pflags & asyncssh.FXF_CREAT:
            return self._open(local, flags), False
        if pflags & asyncssh.FXF_EXCL:
            return self._open(local, flags | os.O_CREAT | os.O_EXCL, perms), True
        for _ in range(8):
            try:
                return self._open(local, flags | os.O_CREAT | os.O_EXCL, perms), True
            except FileExistsError:
                pass
            try:
                return self._open(local, flags), False
            except FileNotFoundError:
                continue  # removed between the two opens: try to create it again
        raise asyncssh.SFTPFailure("File keeps appearing and disappearing")

    def read(self, file_obj: object, offset: int, size: int) -> bytes | Awaitable[bytes]:
        assert isinstance(file_obj, OpenFile)
        self._touch()  # a long transfer is activity, not an idle session
        # At most the READ length the server announces: a client asking for more gets a short
        # read (which SFTP allows) rather than a reply buffered whole in memory.
        data = os.pread(file_obj.fd, min(size, MAX_READ), offset)
        file_obj.bytes_read += len(data)
        BYTES_OUT.inc(len(data))
        if self.channel.get_write_buffer_size() > REPLY_BACKLOG:
            return self._after_drain(data)
        return data

    async def _after_drain(self, data: bytes) -> bytes:
        """data, once the replies queued before it have gone out.

        A client that sends READs but does not take the replies (its channel window stays
        shut) would otherwise have them all queued in the server's memory; asyncssh answers a
        session's requests one after another, so waiting here holds back its next request too.
        """
        session = getattr(self.channel, "_session", None)
        drain = getattr(session, "drain", None)
        if drain is not None:
            await drain(None)
        return data

    # Writes through a handle need no path check: the handle was checked when it was opened,
    # the descriptor is bound to that file whatever happens to its name since, and the epoch
    # lock it holds keeps the processor from moving the file to /upload-processed meanwhile.

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, OpenFile)
        written = self._store(file_obj, offset, data)
        BYTES_IN.inc(written)
        return written

    def _store(self, file_obj: OpenFile, offset: int, data: bytes) -> int:
        if not file_obj.writable:
            raise _denied("write", "File not open for writing")
        if file_obj.failed:
            raise asyncssh.SFTPFailure("Upload already failed; file removed")
        self._touch()
        start = os.fstat(file_obj.fd).st_size if file_obj.append else offset
        if start + len(data) > file_obj.size_limit:
            # The upload cannot be finished, so it is undone as one that ran out of disk is.
            self._abandon(file_obj, "file_size_limit")
            raise self._too_large(file_obj, "write")
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(file_obj.fd, view[written:], offset + written)
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            self._abandon(file_obj, "disk_full")
            ERRORS.labels("write", "no_space").inc()
            raise asyncssh.SFTPFailure(
                f"{os.strerror(exc.errno)}: upload failed and the partial file was removed"
            ) from None
        file_obj.bytes_written += written
        return written

    def _too_large(self, file_obj: OpenFile, op: str) -> asyncssh.SFTPFailure:
        ERRORS.labels(op, "file_too_large").inc()
        if not file_obj.limit_logged:  # once per handle: a client may pipeline many writes
            file_obj.limit_logged = True
            self._log("request.denied", op=op, path=file_obj.path, reason="file_size_limit",
                      limit=file_obj.size_limit)
        undone = " (upload failed and undone)" if file_obj.failed else ""
        return asyncssh.SFTPFailure(f"File size limit exceeded: a file may hold at most "
                                    f"{file_obj.size_limit} bytes{undone}")

    async def copy_data(self, src: OpenFile, src_offset: int, length: int, dst: OpenFile,
                        dst_offset: int) -> None:
        """The copy-data extension: bounded, never overlapping itself, and in pieces that let
        every other session run in between."""
        if not dst.writable:
            raise _denied("copy_data", "File not open for writing")
        source = os.fstat(src.fd)
        available = max(0, source.st_size - src_offset)
        # Fixed now: a copy that appends to its own source must not chase its own output.
        length = available if length == 0 else min(length, available)
        if os.path.samestat(source, os.fstat(dst.fd)) and \
                src_offset < dst_offset + length and dst_offset < src_offset + length:
            ERRORS.labels("copy_data", "overlap").inc()
            raise asyncssh.SFTPFailure("copy-data: source and destination ranges overlap")
        if dst_offset + length > dst.size_limit:
            raise self._too_large(dst, "copy_data")
        done = 0
        while done < length:
            data = os.pread(src.fd, min(COPY_CHUNK, length - done), src_offset + done)
            if not data:
                break
            self._store(dst, dst_offset + done, data)
            done += len(data)
            await asyncio.sleep(0)

    def _abandon(self, file_obj: OpenFile, reason: str) -> None:
        """Undo a partial upload, so nothing incomplete is ever left under its final name: a
        file the session made goes, a file it added to is cut back to its size before."""
        if file_obj.failed:
            return
        file_obj.failed = True
        outcome = "kept"
        try:
            # Only if the name still refers to the file we were writing.
            with self._parent(file_obj.local) as (dir_fd, name):
                if os.path.samestat(os.stat(name, dir_fd=dir_fd, follow_symlinks=False),
                                    os.fstat(file_obj.fd)):
                    if file_obj.keep_size is None:
                        os.unlink(name, dir_fd=dir_fd)
                        outcome = "removed"
                    else:
                        os.ftruncate(file_obj.fd, file_obj.keep_size)
                        outcome = "restored"
        except OSError:
            pass
        self._log("upload.failed", path=file_obj.path, reason=reason,
                  bytes=file_obj.bytes_written, outcome=outcome)

    def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, OpenFile)
        self._open_files.discard(file_obj)
        # A write handle still open when the channel goes away was not closed by the client:
        # the transfer was cut short, so the file is not complete.
        if file_obj.writable and not file_obj.failed and self.channel.is_closing():
            self._abandon(file_obj, "session_ended")
        os.close(file_obj.fd)  # also releases the upload write lock
        _close_all(file_obj.held)
        if file_obj.writable:
            self._log("file.closed", path=file_obj.path, mode="write",
                      bytes=file_obj.bytes_written, complete=not file_obj.failed)
        else:
            self._log("file.closed", path=file_obj.path, mode="read", bytes=file_obj.bytes_read)

    def fsync(self, file_obj: object) -> None:
        assert isinstance(file_obj, OpenFile)
        os.fsync(file_obj.fd)

    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        assert isinstance(file_obj, OpenFile)
        if not file_obj.writable:
            raise _denied("fsetstat", "Read-only file")
        if attrs.size is not None and attrs.size > file_obj.size_limit:
            raise self._too_large(file_obj, "fsetstat")
        self._apply_attrs(file_obj.fd, attrs, "fsetstat")

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        local = self._follow("setstat", path)
        self._writable("setstat", local)
        with self._changing("setstat", local):
            fd = self._open(local, os.O_PATH)
            try:
                # O_PATH opens even a file whose mode lets nobody read it, so a district can
                # always repair modes; the changes go through the descriptor's /proc name.
                if stat.S_ISLNK(os.fstat(fd).st_mode):
                    raise asyncssh.SFTPFailure("Is a symbolic link")
                self._apply_attrs(fd, attrs, "setstat", by_path=f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        self.setstat(path, attrs)

    def _apply_attrs(self, fd: int, attrs: SFTPAttrs, op: str, by_path: str | None = None) -> None:
        """Size, permission bits and times only: never owners, never set-id or sticky bits, and
        never a mode that locks the owner out (see allowed_mode)."""
        if attrs.uid is not None or attrs.gid is not None:
            raise _denied(op, "Changing ownership is not allowed")
        if attrs.size is not None:
            volume = os.fstatvfs(fd)
            if attrs.size > min(self.limits.max_file_size, volume.f_blocks * volume.f_frsize):
                ERRORS.labels(op, "file_too_large").inc()
                raise asyncssh.SFTPFailure("File size limit exceeded")
            if by_path is None:
                os.ftruncate(fd, attrs.size)
            else:
                os.truncate(by_path, attrs.size)
        if attrs.permissions is not None:
            mode = allowed_mode(attrs.permissions, stat.S_ISDIR(os.fstat(fd).st_mode))
            if by_path is None:
                os.fchmod(fd, mode)
            else:
                os.chmod(by_path, mode)
        if attrs.atime is not None and attrs.mtime is not None:
            os.utime(fd if by_path is None else by_path, (attrs.atime, attrs.mtime))

    # -- names -------------------------------------------------------------------------------

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        local = self._nofollow("mkdir", path)
        self._writable("mkdir", local, directory=True)
        with self._changing("mkdir", local), self._parent(local) as (dir_fd, name):
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        self._log("directory.created", path=self._virtual(local))

    def rmdir(self, path: bytes) -> None:
        local = self._nofollow("rmdir", path)
        self._writable("rmdir", local)
        with self._changing("rmdir", local), self._parent(local) as (dir_fd, name):
            os.rmdir(name, dir_fd=dir_fd)
        self._log("directory.removed", path=self._virtual(local))

    def remove(self, path: bytes) -> None:
        local = self._nofollow("remove", path)
        self._writable("remove", local)
        with self._changing("remove", local), self._parent(local) as (dir_fd, name):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                raise asyncssh.SFTPFailure("Is a directory")
            os.unlink(name, dir_fd=dir_fd)
        self._log("file.removed", path=self._virtual(local))

    def _rename(self, op: str, oldpath: bytes, newpath: bytes, replace: bool) -> None:
        old = self._nofollow(op, oldpath)
        new = self._nofollow(op, newpath)
        self._writable(op, old)
        self._writable(op, new)
        with self._changing(op, old, new), self._parent(old) as (old_dir, old_name), \
                self._parent(new) as (new_dir, new_name):
            moving_dir = stat.S_ISDIR(os.stat(old_name, dir_fd=old_dir,
                                              follow_symlinks=False).st_mode)
            self._writable(op, new, directory=moving_dir)
            if replace:
                os.replace(old_name, new_name, src_dir_fd=old_dir, dst_dir_fd=new_dir)
            else:
                # SFTPv3 rename must fail when the target exists.
                beneath.rename_noreplace(old_dir, old_name, new_dir, new_name)
        self._log("path.renamed", path=self._virtual(old), to=self._virtual(new))

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        try:
            self._rename("rename", oldpath, newpath, replace=False)
        except FileExistsError:
            raise asyncssh.SFTPFailure("Target exists") from None

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename("posix_rename", oldpath, newpath, replace=True)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        self._mapped("symlink", newpath)
        self._log("request.denied", op="symlink")
        raise _denied("symlink", "Creating links is not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._mapped("link", newpath)
        self._log("request.denied", op="link")
        raise _denied("link", "Creating links is not allowed")

    def exit(self) -> None:
        for handle in list(self._open_files):
            self.close(handle)
        # OpenSSH's scp (SFTP mode) fails its transfer unless the subsystem reports an exit
        # status, which asyncssh does not send on its own; internal-sftp sends 0.
        if not self.channel.is_closing():
            with contextlib.suppress(OSError, asyncssh.Error):
                self.channel.exit(0)


# asyncssh answers copy-data and limits@openssh.com in its request handler, not through the
# SFTPServer: its copy-data copies in one loop that never yields, with no bound and no overlap
# check, and its limits announce the process's descriptor limit as the handles a session may
# open. Both are replaced by versions that ask the DistrictSFTPServer.

async def _process_copy_data(handler: Any, packet: Any) -> None:
    read_from = packet.get_string()
    read_offset = packet.get_uint64()
    read_length = packet.get_uint64()
    write_to = packet.get_string()
    write_offset = packet.get_uint64()
    packet.check_end()
    server = handler._server
    src = handler._file_handles.get(read_from)
    dst = handler._file_handles.get(write_to)
    if not isinstance(server, DistrictSFTPServer) or not isinstance(src, OpenFile) or \
            not isinstance(dst, OpenFile):
        raise asyncssh.SFTPInvalidHandle("Invalid file handle")
    OPERATIONS.labels("copy_data").inc()
    await server.copy_data(src, read_offset, read_length, dst, write_offset)


async def _process_limits(handler: Any, packet: Any) -> SFTPLimits:
    packet.check_end()
    server = handler._server
    handles = server.limits.max_open_handles if isinstance(server, DistrictSFTPServer) else 0
    return SFTPLimits(MAX_SFTP_PACKET_LEN, MAX_READ, MAX_SFTP_WRITE_LEN, handles)


def _install_handlers() -> None:
    handlers: dict[Any, Any] = SFTPServerHandler._packet_handlers
    if b"copy-data" in handlers:
        handlers[b"copy-data"] = _process_copy_data
    if b"limits@openssh.com" in handlers:
        handlers[b"limits@openssh.com"] = _process_limits


_install_handlers()
