"""What a district may do to its tree over SFTP/scp: read everywhere, write only inside /upload."""

# Paths stay bytes end to end (a district may upload names that are not UTF-8), so this module
# uses os/os.path rather than pathlib throughout.
# ruff: noqa: PTH102, PTH104, PTH105, PTH106, PTH108, PTH112, PTH114, PTH116

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from sftpd import tree
from sftpd.server.audit import BYTES_IN, BYTES_OUT, ERRORS, OPERATIONS, AuditLog
from sftpd.uploads import hold_write_lock

# Longer than any real client path; refusing early keeps the error an SFTP one, not ENAMETOOLONG.
MAX_PATH_BYTES = 4096
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OpenFile:
    """One file handle of one session: a raw descriptor, read with pread and written with pwrite."""

    __slots__ = ("bytes_read", "bytes_written", "failed", "fd", "local", "path", "writable")

    def __init__(self, fd: int, path: str, local: bytes, writable: bool) -> None:
        self.fd = fd
        self.path = path
        self.local = local
        self.writable = writable
        self.bytes_read = 0
        self.bytes_written = 0
        self.failed = False

    def fileno(self) -> int:
        return self.fd


def _denied(op: str, reason: str) -> asyncssh.SFTPPermissionDenied:
    ERRORS.labels(op, "denied").inc()
    return asyncssh.SFTPPermissionDenied(reason)


class DistrictSFTPServer(asyncssh.SFTPServer):
    """asyncssh's chrooted SFTP server with the district's write rules and link containment.

    asyncssh's `chroot` maps client paths into the root; on top of that every path is resolved
    with realpath and refused unless it stays inside the root, so a symbolic link planted in the
    tree (the district cannot create one, but staff or a bug could) never leads outside it.
    Files are then opened by their resolved name with O_NOFOLLOW, so a link swapped in after the
    check is refused too.
    """

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], root: bytes, audit: AuditLog,
                 session_fields: dict[str, Any], touch: Callable[[], None]) -> None:
        super().__init__(chan, chroot=root)
        self._root = os.path.realpath(root)
        self._upload = posixpath.join(self._root, tree.UPLOAD.encode())
        self._audit = audit
        self._fields = session_fields
        self._touch = touch
        self._open_files: set[OpenFile] = set()

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
        mapped = self._mapped(op, path)
        if mapped == self._root:
            return mapped
        parent, name = posixpath.split(mapped)
        real_parent = os.path.realpath(parent)
        if not self._inside(real_parent):
            raise _denied(op, "Path leads outside the root")
        return posixpath.join(real_parent, name)

    def _virtual(self, local: bytes) -> str:
        return self.reverse_map_path(local).decode("utf-8", "replace")

    def _log(self, event: str, **fields: Any) -> None:
        self._audit.event(event, **self._fields, **fields)

    def _writable(self, op: str, local: bytes) -> None:
        if not self._in_upload(local):
            self._log("request.denied", op=op,
                      path=self._virtual(local) if self._inside(local) else "?")
            raise _denied(op, f"Read-only: only /{tree.UPLOAD}/ is writable")

    # -- reading -----------------------------------------------------------------------------

    def realpath(self, path: bytes) -> bytes:
        return self.reverse_map_path(self._follow("realpath", path))

    def stat(self, path: bytes) -> os.stat_result:
        return os.stat(self._follow("stat", path))

    def lstat(self, path: bytes) -> os.stat_result:
        return os.lstat(self._nofollow("lstat", path))

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
        return os.statvfs(self._follow("statvfs", path))

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
        for name in (b".", b".."):
            attrs = SFTPAttrs.from_local(os.stat(local if name == b"." else
                                                 (posixpath.dirname(local)
                                                  if local != self._root else local)))
            yield SFTPName(name, attrs=attrs)
        with os.scandir(local) as entries:
            for entry in entries:
                yield SFTPName(entry.name, attrs=SFTPAttrs.from_local(
                    entry.stat(follow_symlinks=False)))

    # -- files -------------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> OpenFile:
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT
                                 | asyncssh.FXF_TRUNC))
        local = self._follow("open", path)
        if not writing:
            fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            handle = OpenFile(fd, self._virtual(local), local, writable=False)
            self._open_files.add(handle)
            self._log("file.opened", path=handle.path, mode="read")
            return handle
        self._writable("open", local)
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_RDWR if pflags & asyncssh.FXF_READ else os.O_WRONLY
        if pflags & asyncssh.FXF_APPEND:
            flags |= os.O_APPEND
        if pflags & asyncssh.FXF_CREAT:
            flags |= os.O_CREAT
        if pflags & asyncssh.FXF_EXCL:
            flags |= os.O_EXCL
        perms = 0o644 if attrs.permissions is None else attrs.permissions & 0o666
        # Truncate only after the lock is ours, so a second writer can never wipe an upload
        # another session is still writing.
        fd = os.open(local, flags, perms)
        try:
            hold_write_lock(fd)
        except BlockingIOError:
            os.close(fd)
            self._log("request.denied", op="open", path=self._virtual(local), reason="busy")
            ERRORS.labels("open", "busy").inc()
            raise asyncssh.SFTPFailure("File is being written by another session") from None
        if pflags & asyncssh.FXF_TRUNC:
            os.ftruncate(fd, 0)
        handle = OpenFile(fd, self._virtual(local), local, writable=True)
        self._open_files.add(handle)
        self._log("file.opened", path=handle.path, mode="write")
        return handle

    # Reads and writes on an open handle need no path checks: the handle was checked when it
    # was opened, and the descriptor is bound to that file whatever happens to its name since.

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, OpenFile)
        self._touch()  # a long transfer is activity, not an idle session
        data = os.pread(file_obj.fd, size, offset)
        file_obj.bytes_read += len(data)
        BYTES_OUT.inc(len(data))
        return data

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, OpenFile)
        if not file_obj.writable:
            raise _denied("write", "File not open for writing")
        if file_obj.failed:
            raise asyncssh.SFTPFailure("Upload already failed; file removed")
        self._touch()
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
        BYTES_IN.inc(written)
        return written

    def _abandon(self, file_obj: OpenFile, reason: str) -> None:
        """Remove a partial upload, so nothing incomplete is ever left under its final name."""
        if file_obj.failed:
            return
        file_obj.failed = True
        try:
            # Only if the name still refers to the file we were writing.
            if os.path.samestat(os.lstat(file_obj.local), os.fstat(file_obj.fd)):
                os.unlink(file_obj.local)
        except OSError:
            pass
        self._log("upload.failed", path=file_obj.path, reason=reason,
                  bytes=file_obj.bytes_written)

    def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, OpenFile)
        self._open_files.discard(file_obj)
        # A write handle still open when the channel goes away was not closed by the client:
        # the transfer was cut short, so the file is not complete.
        if file_obj.writable and not file_obj.failed and self.channel.is_closing():
            self._abandon(file_obj, "session_ended")
        os.close(file_obj.fd)  # also releases the upload write lock
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
        self._apply_attrs(file_obj.fd, attrs, "fsetstat")

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        local = self._follow("setstat", path)
        self._writable("setstat", local)
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            self._apply_attrs(fd, attrs, "setstat")
        finally:
            os.close(fd)

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        self.setstat(path, attrs)

    def _apply_attrs(self, fd: int, attrs: SFTPAttrs, op: str) -> None:
        """Size, permission bits and times only: never owners, never set-id or sticky bits."""
        if attrs.uid is not None or attrs.gid is not None:
            raise _denied(op, "Changing ownership is not allowed")
        if attrs.size is not None:
            os.ftruncate(fd, attrs.size)
        if attrs.permissions is not None:
            os.fchmod(fd, attrs.permissions & 0o777)
        if attrs.atime is not None and attrs.mtime is not None:
            os.utime(fd, (attrs.atime, attrs.mtime))

    # -- names -------------------------------------------------------------------------------

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        local = self._nofollow("mkdir", path)
        self._writable("mkdir", local)
        os.mkdir(local, 0o755)
        self._log("directory.created", path=self._virtual(local))

    def rmdir(self, path: bytes) -> None:
        local = self._nofollow("rmdir", path)
        self._writable("rmdir", local)
        os.rmdir(local)
        self._log("directory.removed", path=self._virtual(local))

    def remove(self, path: bytes) -> None:
        local = self._nofollow("remove", path)
        self._writable("remove", local)
        if os.path.isdir(local) and not os.path.islink(local):
            raise asyncssh.SFTPFailure("Is a directory")
        os.unlink(local)
        self._log("file.removed", path=self._virtual(local))

    def _rename(self, op: str, oldpath: bytes, newpath: bytes, replace: bool) -> None:
        old = self._nofollow(op, oldpath)
        new = self._nofollow(op, newpath)
        self._writable(op, old)
        self._writable(op, new)
        if replace:
            os.replace(old, new)
        else:
            # SFTPv3 rename must fail when the target exists; link+unlink would also work for
            # files only, so check and rename (the district is the only writer of /upload).
            if os.path.lexists(new):
                raise asyncssh.SFTPFailure("Target exists")
            os.rename(old, new)
        self._log("path.renamed", path=self._virtual(old), to=self._virtual(new))

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename("rename", oldpath, newpath, replace=False)

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
