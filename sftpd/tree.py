"""The district's directory tree on its volume; the layout itself is district_contract.layout's."""

from __future__ import annotations

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

__all__ = ["BACKUPS", "DOCVIEWER", "DOWNLOADS", "PDFS", "TREE", "UPLOAD", "UPLOAD_PROCESSED",
           "ensure_tree"]


def ensure_tree(root: Path) -> None:
    """Create any missing directory of the tree under root; never touches what exists."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in TREE:
        (root / rel).mkdir(mode=0o755, exist_ok=True)
