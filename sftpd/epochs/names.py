"""Names the processor reserves inside the upload tree: the completion marker and its own files."""

from __future__ import annotations

# A client may finish an epoch early by writing this (empty) file at the epoch's top level;
# `COMPLETE` is the name districts' own documentation gives (case-sensitive), `_COMPLETE` the
# name this server used first, kept as an alias.
COMPLETION_MARKER = "COMPLETE"
COMPLETION_MARKERS = (COMPLETION_MARKER, "_COMPLETE")
# A loose `<name>_auto.csv` in upload/ asks the server to make it an epoch of its own at once.
AUTO_SUFFIX = "_auto.csv"
PROCESSING_LOG = "processing.log"
PROCESSING_JSON = "processing.json"
# Suffix of the processor's own files while it writes them (renamed into place when done).
WRITING_SUFFIX = ".sftpd-writing"
# Loose files are gathered into `upload/<GATHER_PREFIX><epoch name>/` before it is renamed to
# `upload/<epoch name>/`; the hidden name keeps a half-gathered epoch from being processed.
GATHER_PREFIX = ".sftpd-gather-"
# The staging directory of `_auto.csv` files is `<GATHER_PREFIX><AUTO_STAGING><epoch name>`.
AUTO_STAGING = "auto-"
# `sftpd sif-pull` builds its epoch in `upload/<PULL_PREFIX><epoch name>/` and renames it to
# `upload/<epoch name>/` once COMPLETE is in: the processor never takes a build for an epoch.
PULL_PREFIX = ".sftpd-pull-"
# The list file inside a staging directory of processors before the staging record
# (sftpd.epochs.stagings); still reserved, never read.
GATHER_LIST = ".sftpd-gather-list"
# Before a gathered epoch is revealed, the names its files had in upload/ (from the staging
# record) are written to this file in it, one a line: the processing log quotes it. Only ever
# read for that note, never trusted for what to move.
GATHERED_FROM = ".sftpd-gathered-from"
# Epochs the server names (gathered loose files) use the districts' documented form, in UTC.
EPOCH_NAME_FORMAT = "%Y%m%d-%H%M%S"
# Something of the district's found where the processor writes its own file (a directory named
# processing.log, say) is renamed to `<name><DISPLACED_SUFFIX>`: kept, out of the way.
DISPLACED_SUFFIX = ".sftpd-displaced"

_RESERVED = frozenset({*COMPLETION_MARKERS, PROCESSING_LOG, PROCESSING_JSON, GATHER_LIST,
                       GATHERED_FROM})


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


def auto_target(name: str) -> str | None:
    """The name a loose `<name>_auto.csv` gets inside its epoch (`users_auto.csv` ->
    `users.csv`), or None when the name does not ask for automatic processing."""
    if len(name) > len(AUTO_SUFFIX) and name.endswith(AUTO_SUFFIX):
        return name[: -len(AUTO_SUFFIX)] + ".csv"
    return None
