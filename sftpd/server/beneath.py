"""Open a path beneath a directory descriptor without following any link on the way."""

# Paths are bytes (a district's names need not be UTF-8).

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform

# linux/openat2.h. The syscall number is the same on every architecture (the unified table).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64))


def _load_libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_libc = _load_libc()
_syscall = None if _libc is None else _libc.syscall
if _syscall is not None:
    _syscall.restype = ctypes.c_long
# Cleared the first time the kernel (older than 5.6) or a seccomp filter says it has no openat2.
_have_openat2 = _syscall is not None


def components(rel: bytes) -> list[bytes]:
    """The names of a relative path; `..` is refused rather than resolved."""
    parts = [p for p in rel.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise OSError(errno.EXDEV, "Path leads outside the root", rel)
    return parts


def open_beneath(dir_fd: int, rel: bytes, flags: int, mode: int = 0) -> int:
    """A descriptor for rel beneath dir_fd, opened with flags (plus O_NOFOLLOW, O_CLOEXEC).

    No component may be a symbolic link, the last one included: callers resolve links
    themselves first (and check where they lead), so a link found here was swapped in since,
    and the open fails with ELOOP instead of following it out of the tree.
    """
    global _have_openat2
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    parts = components(rel)
    if not parts:
        return os.open(".", flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC), dir_fd=dir_fd)
    if _have_openat2 and _syscall is not None:
        how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, _RESOLVE)
        path = b"/".join(parts)
        for _ in range(16):  # EAGAIN: a rename raced the lookup; the kernel asks to retry
            fd = int(_syscall(_SYS_OPENAT2, dir_fd, path, ctypes.byref(how),
                              ctypes.sizeof(how)))
            if fd >= 0:
                return fd
            code = ctypes.get_errno()
            if code == errno.EAGAIN:
                continue
            if code in (errno.ENOSYS, errno.EPERM) and _openat2_missing():
                _have_openat2 = False
                break
            raise OSError(code, os.strerror(code), path)
        else:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)
    return _walk(dir_fd, parts, flags, mode)


def _openat2_missing() -> bool:
    """True when openat2 itself is unavailable (not merely refused for this path)."""
    assert _syscall is not None
    how = _OpenHow(os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, 0)
    fd = int(_syscall(_SYS_OPENAT2, -100, b"/", ctypes.byref(how), ctypes.sizeof(how)))
    if fd >= 0:
        os.close(fd)
        return False
    return ctypes.get_errno() in (errno.ENOSYS, errno.EPERM)


def _walk(dir_fd: int, parts: list[bytes], flags: int, mode: int) -> int:
    """openat2's guarantee by hand: each directory opened with O_NOFOLLOW below the last."""
    current = dir_fd
    try:
        for name in parts[:-1]:
            nxt = os.open(name, _DIRECTORY, dir_fd=current)
            if current != dir_fd:
                os.close(current)
            current = nxt
        return os.open(parts[-1], flags, mode, dir_fd=current)
    finally:
        if current != dir_fd:
            os.close(current)


def open_parent(dir_fd: int, rel: bytes) -> tuple[int, bytes]:
    """The parent directory of rel opened beneath dir_fd, and rel's last name (for *at calls)."""
    parts = components(rel)
    if not parts:
        raise OSError(errno.EINVAL, "No name", rel)
    return open_beneath(dir_fd, b"/".join(parts[:-1]), os.O_RDONLY | os.O_DIRECTORY), parts[-1]


_RENAME_NOREPLACE = 1


def rename_noreplace(src_dir: int, src: bytes, dst_dir: int, dst: bytes) -> None:
    """renameat2(RENAME_NOREPLACE): FileExistsError if dst exists, checked in the same step."""
    if _libc is not None:
        if _libc.renameat2(src_dir, src, dst_dir, dst, _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):  # else: this file system cannot
            raise OSError(code, os.strerror(code), dst)
    if _exists(dst_dir, dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def uses_openat2() -> bool:
    """Whether this kernel resolves beneath with openat2 (else the per-component walk)."""
    return _have_openat2
