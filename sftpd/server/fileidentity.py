"""Telling whether a mounted file changed: the identity a Secret volume's `..data` swap changes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileIdentity:
    """What changes when Kubernetes swaps a Secret volume's `..data` link or a file is edited:
    the resolved path (a new timestamped directory), its inode, mtime and size."""

    real_path: str
    inode: int
    mtime_ns: int
    size: int


def identity_of(path: Path) -> FileIdentity | None:
    """The file's identity now; None when it cannot be resolved or read (absent, no access)."""
    try:
        real = os.path.realpath(path)
        st = Path(real).stat()
    except OSError:
        return None
    return FileIdentity(real, st.st_ino, st.st_mtime_ns, st.st_size)
