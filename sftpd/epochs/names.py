"""Names the processor reserves inside the upload tree: the completion marker and its own files."""

from __future__ import annotations

# A client may finish an epoch early by writing this (empty) file at the epoch's top level.
COMPLETION_MARKER = "_COMPLETE"
PROCESSING_LOG = "processing.log"
PROCESSING_JSON = "processing.json"
# Suffix of the processor's own files while it writes them (renamed into place when done).
WRITING_SUFFIX = ".sftpd-writing"
# Loose files are gathered into `upload/<GATHER_PREFIX><epoch name>/` before it is renamed to
# `upload/<epoch name>/`; the hidden name keeps a half-gathered epoch from being processed.
GATHER_PREFIX = ".sftpd-gather-"
GATHER_LIST = ".sftpd-gather-list"

_RESERVED = frozenset({COMPLETION_MARKER, PROCESSING_LOG, PROCESSING_JSON, GATHER_LIST})


def is_reserved(name: str) -> bool:
    """True for a name that is the processor's (or the marker), never part of the data."""
    return name in _RESERVED or name.endswith(WRITING_SUFFIX) or name.startswith(GATHER_PREFIX)
