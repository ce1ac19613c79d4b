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
GATHER_LIST = ".sftpd-gather-list"
# Once every listed file is moved, the list is renamed to this: it stays in the epoch as the
# record of the names the files had in upload/ (the processing log quotes it).
GATHERED_FROM = ".sftpd-gathered-from"
# Epochs the server names (gathered loose files) use the districts' documented form, in UTC.
EPOCH_NAME_FORMAT = "%Y%m%d-%H%M%S"

_RESERVED = frozenset({*COMPLETION_MARKERS, PROCESSING_LOG, PROCESSING_JSON, GATHER_LIST,
                       GATHERED_FROM})


def is_reserved(name: str) -> bool:
    """True for a name that is the processor's (or the marker), never part of the data."""
    return name in _RESERVED or name.endswith(WRITING_SUFFIX) or name.startswith(GATHER_PREFIX)


def auto_target(name: str) -> str | None:
    """The name a loose `<name>_auto.csv` gets inside its epoch (`users_auto.csv` ->
    `users.csv`), or None when the name does not ask for automatic processing."""
    if len(name) > len(AUTO_SUFFIX) and name.endswith(AUTO_SUFFIX):
        return name[: -len(AUTO_SUFFIX)] + ".csv"
    return None
