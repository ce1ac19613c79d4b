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
# The list file inside a staging directory of processors before the staging record
# (sftpd.epochs.stagings); still reserved, never read.
GATHER_LIST = ".sftpd-gather-list"
# Something of the district's found where the processor writes its own file (a directory named
# processing.log, say) is renamed to `<name><DISPLACED_SUFFIX>`: kept, out of the way.
DISPLACED_SUFFIX = ".sftpd-displaced"

_RESERVED = frozenset({COMPLETION_MARKER, PROCESSING_LOG, PROCESSING_JSON, GATHER_LIST})


def is_reserved(name: str) -> bool:
    """True for a name that is the processor's (or the marker), never part of the data."""
    return (name in _RESERVED or name.endswith((WRITING_SUFFIX, DISPLACED_SUFFIX))
            or name.startswith(GATHER_PREFIX))


def shown(name: str) -> str:
    """A file name as logs, reports and the database take it: bytes that are not UTF-8 (kept
    by the file system API as surrogate escapes) are written as `\\xNN`."""
    if is_utf8(name):
        return name
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file system name decodes to
        return name.encode("utf-8", "backslashreplace").decode("ascii")
    return raw.decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (or any other lone surrogate)."""
    return not any("\ud800" <= c <= "\udfff" for c in name)
