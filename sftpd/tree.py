"""The district's directory tree on its volume: the one place its layout is written down."""

from __future__ import annotations

from pathlib import Path

UPLOAD = "upload"
UPLOAD_PROCESSED = "upload-processed"
DOWNLOADS = "downloads"
BACKUPS = f"{DOWNLOADS}/backups"
DOCVIEWER = f"{DOWNLOADS}/docviewer"
PDFS = f"{DOWNLOADS}/pdfs"

# Every directory a district sees, parents first.
TREE: tuple[str, ...] = (UPLOAD, UPLOAD_PROCESSED, DOWNLOADS, BACKUPS, DOCVIEWER, PDFS)


def ensure_tree(root: Path) -> None:
    """Create any missing directory of the tree under root; never touches what exists."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in TREE:
        (root / rel).mkdir(mode=0o755, exist_ok=True)
