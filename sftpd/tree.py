"""The district's directory tree on its volume; the layout itself is district_contract.layout's."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from district_contract.layout import (
    BACKUPS,
    DOCVIEWER,
    DOWNLOADS,
    PDFS,
    TREE,
    UPLOAD,
    UPLOAD_PROCESSED,
)

__all__ = ["BACKUPS", "DOCVIEWER", "DOWNLOADS", "DOWNLOAD_DIRECTORY_RULE", "PDFS", "TREE",
           "UPLOAD", "UPLOAD_PROCESSED", "check_download_directory",
           "ensure_download_directories", "ensure_tree"]

# A state directory under downloads/ (`sftpd serve --download-directories`): one path
# component of safe characters. No '.', so it can never be taken for a published archive
# (`<name>.zip`) or a hidden file; the tree's own directories are not state directories.
_DOWNLOAD_DIRECTORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_OWN_DOWNLOADS = frozenset(rel.split("/", 1)[1] for rel in TREE
                           if rel.startswith(DOWNLOADS + "/"))
DOWNLOAD_DIRECTORY_RULE = ("1 to 63 letters, digits, '-' and '_', a letter or digit first, "
                           "not " + ", ".join(sorted(_OWN_DOWNLOADS)))


def ensure_tree(root: Path) -> None:
    """Create any missing directory of the tree under root; never touches what exists."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in TREE:
        (root / rel).mkdir(mode=0o755, exist_ok=True)


def check_download_directory(name: str) -> str:
    """The name of a state directory under downloads/, or ValueError saying why not."""
    if not _DOWNLOAD_DIRECTORY.fullmatch(name) or name in _OWN_DOWNLOADS:
        raise ValueError(f"download directory {name[:80]!r}: {DOWNLOAD_DIRECTORY_RULE}")
    return name


def ensure_download_directories(root: Path, names: tuple[str, ...]) -> None:
    """Create each missing state directory under downloads/ (empty; what exists is kept);
    something else under such a name (a file, a link) is refused with OSError."""
    downloads = root / DOWNLOADS
    for name in names:
        path = downloads / check_download_directory(name)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o755)
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise NotADirectoryError(f"{DOWNLOADS}/{name} exists and is not a directory")
