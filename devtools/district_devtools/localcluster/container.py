"""A container's view of this machine: a private mount namespace, a read-only root, its volumes."""

# Run by the kubelet stand-in (kubelet.py) as `python -m district_devtools.localcluster.container
# PLAN`, as root: it builds the view, drops to the pod's user and execs the container's command.

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
CLONE_NEWNS = 0x00020000
PR_SET_NO_NEW_PRIVS = 38
# Host directories a container runtime gives the container writable, never read-only.
WRITABLE_SYSTEM_DIRS = frozenset({"dev", "proc", "sys"})


class MountPointError(RuntimeError):
    """A mountPath cannot be made inside the container's root."""


_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def encode(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    if _libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags),
                   encode(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} -> {target}: {os.strerror(errno)}")


def _read_only(target: str) -> None:
    # A bind remount replaces the per-mount flags: keep nosuid/nodev/noexec as they were.
    kept = os.statvfs(target).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def _bind_entry(host: os.DirEntry[str], target: Path) -> None:
    if host.is_symlink():
        target.symlink_to(Path(host.path).readlink())
    elif host.is_dir():
        target.mkdir()
        _mount(host.path, str(target), None, MS_BIND | MS_REC)
    else:
        target.touch()
        _mount(host.path, str(target), None, MS_BIND)


class _RootBuilder:
    """A tmpfs root holding binds of the host's top-level entries; missing mount points are
    made in tmpfs shadows of their parents, so nothing is ever created on the host."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.writable: set[Path] = {rootfs}
        self.read_only_later: list[Path] = [rootfs]
        _mount("tmpfs", str(rootfs), "tmpfs", 0, "mode=0755")
        for entry in os.scandir("/"):
            _bind_entry(entry, rootfs / entry.name)
            if entry.is_dir() and not entry.is_symlink() \
                    and entry.name not in WRITABLE_SYSTEM_DIRS:
                self.read_only_later.append(rootfs / entry.name)

    def _shadow(self, inside: Path) -> None:
        host = Path("/") / inside.relative_to(self.rootfs)
        _mount("tmpfs", str(inside), "tmpfs", 0, "mode=0755")
        for entry in os.scandir(host):
            _bind_entry(entry, inside / entry.name)
        self.writable.add(inside)
        if host.parts[1:2] and host.parts[1] not in WRITABLE_SYSTEM_DIRS:
            self.read_only_later.append(inside)

    def make_reachable(self, path: str) -> None:
        """Open directories on the way to `path` that others may not enter (such as /root),
        by shadowing them; what is inside keeps its own permissions."""
        current = self.rootfs
        for part in [p for p in Path(path).parts if p != "/"]:
            candidate = current / part
            if candidate.is_symlink() or not candidate.is_dir():
                return
            if not candidate.stat().st_mode & stat.S_IXOTH and candidate not in self.writable:
                self._shadow(candidate)
            current = candidate

    def mount_point(self, path: str, is_file: bool) -> Path:
        current = self.rootfs
        parts = [p for p in Path(path).parts if p != "/"]
        for index, part in enumerate(parts):
            candidate = current / part
            last = index == len(parts) - 1
            if candidate.is_symlink():
                # Mounting onto a link would follow it out of the container's root.
                raise MountPointError(f"mountPath {path}: {candidate} is a symbolic link")
            if not candidate.exists() and not candidate.is_symlink():
                if current not in self.writable:
                    self._shadow(current)
                if last and is_file:
                    candidate.touch()
                else:
                    candidate.mkdir()
                self.writable.add(candidate)
            current = candidate
        return current


def _expose_image_files(rootfs: Path, image_paths: Sequence[str],
                        volume_targets: Sequence[str]) -> None:
    """Bind the stand-ins for the image's files (interpreter, checkout) back on top of a volume
    that hides them: in a real image they live apart from the pod's volumes (/opt, /app), here
    they may sit under /tmp, where the pod mounts an emptyDir."""
    for path in image_paths:
        if not any(Path(path).is_relative_to(t) for t in volume_targets):
            continue
        inside = rootfs / Path(path).relative_to("/")
        if Path(path).is_dir():
            inside.mkdir(parents=True, exist_ok=True)
        else:
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.touch()
        _mount(path, str(inside), None, MS_BIND | MS_REC)
        _read_only(str(inside))


def enter(plan: Mapping[str, Any]) -> None:
    """Build the container's view of the file system, drop privileges, exec its command."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    builder = _RootBuilder(Path(plan["rootfs"]))
    for path in plan["reachable"]:
        builder.make_reachable(path)
    # Parents before children, so a nested mountPath lands inside its parent's volume.
    mounts = sorted(plan["mounts"], key=lambda m: len(Path(m["target"]).parts))
    # Mount points first, while the root is writable; the root goes read-only before the
    # volumes arrive, since a remount changes whatever is mounted on top at that path.
    targets = [builder.mount_point(m["target"], is_file=not Path(m["source"]).is_dir())
               for m in mounts]
    if plan["readOnlyRoot"]:
        for path in builder.read_only_later:
            _read_only(str(path))
    for mount, target in zip(mounts, targets, strict=True):
        _mount(mount["source"], str(target), None, MS_BIND | MS_REC)
        if mount["readOnly"]:
            _read_only(str(target))
    _expose_image_files(Path(plan["rootfs"]), plan["reachable"],
                        [m["target"] for m in mounts])
    os.chroot(plan["rootfs"])
    os.chdir(plan["workingDir"])
    os.setgroups(plan["groups"])
    os.setgid(plan["gid"])
    os.setuid(plan["uid"])
    if plan["noNewPrivs"] and _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.umask(0o022)
    argv = plan["argv"]
    executable = shutil.which(argv[0], path=plan["env"].get("PATH")) or argv[0]
    os.execve(executable, argv, plan["env"])  # noqa: S606 - the container's own argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="container", description=__doc__)
    parser.add_argument("plan", type=Path, help="the JSON plan kubelet.LocalPod.start wrote")
    args = parser.parse_args(argv)
    enter(json.loads(args.plan.read_text()))
    return 127  # execve does not return


if __name__ == "__main__":
    sys.exit(main())
