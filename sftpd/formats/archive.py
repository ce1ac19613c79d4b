"""Reading an uploaded zip safely: every member checked before any is read (count, safe names,
no links, no encryption, known compression, sizes and compression ratio), members streamed.

A zip is the district's input and may be crafted: its central directory is parsed only once its
size and entry count (from the end record, read first) are within bounds, and a member's
declared size bounds what reading it yields (the zipfile module stops there and checks the CRC),
so checking the declared sizes and ratios bounds every read.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

MAX_MEMBERS = 10_000
# A central directory entry is 46 bytes plus its name, extra field and comment.
MAX_DIRECTORY_BYTES = MAX_MEMBERS * 1024
MAX_MEMBER_BYTES = 8 << 30
MAX_TOTAL_BYTES = 32 << 30
# Real CSV compresses 5-30 times; deflate can reach about 1000. Small members are exempt (a
# short run of repeated text compresses well and costs nothing to read).
MAX_RATIO = 200
RATIO_EXEMPT_BYTES = 1 << 20
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"


class ArchiveError(zipfile.BadZipFile):
    """The archive (or one member, named in the message) is refused or cannot be read."""


class TooManyMembers(ArchiveError):
    """The archive holds more members than are ever looked at."""


def directory_bounds(stream: IO[bytes]) -> tuple[int, int]:
    """(entry count, central directory bytes) from the end record, without parsing further."""
    size = stream.seek(0, io.SEEK_END)
    tail_size = min(size, _EOCD.size + 0xFFFF)
    stream.seek(size - tail_size)
    tail = stream.read(tail_size)
    at = tail.rfind(_EOCD_SIGNATURE)
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ArchiveError("not a zip file (no end of central directory record)")
    _, _, _, _, entries, directory, _, _ = _EOCD.unpack_from(tail, at)
    if entries == 0xFFFF or directory == 0xFFFFFFFF:
        locator_at = size - tail_size + at - _ZIP64_LOCATOR.size
        if locator_at < 0:
            raise ArchiveError("damaged zip64 end record")
        stream.seek(locator_at)
        signature, _, eocd64_at, _ = _ZIP64_LOCATOR.unpack(stream.read(_ZIP64_LOCATOR.size))
        if signature != _ZIP64_LOCATOR_SIGNATURE or eocd64_at >= size:
            raise ArchiveError("damaged zip64 end record")
        stream.seek(eocd64_at)
        record = stream.read(_ZIP64_EOCD.size)
        if len(record) != _ZIP64_EOCD.size:
            raise ArchiveError("damaged zip64 end record")
        fields = _ZIP64_EOCD.unpack(record)
        if fields[0] != _ZIP64_EOCD_SIGNATURE:
            raise ArchiveError("damaged zip64 end record")
        entries, directory = fields[7], fields[8]
    return entries, directory


def is_safe_name(name: str) -> bool:
    """A relative member name with no `..` component (either slash counts as one)."""
    parts = name.replace("\\", "/").split("/")
    return (bool(name) and not name.startswith(("/", "\\")) and "\0" not in name
            and ".." not in parts and not (len(name) > 1 and name[1] == ":"))


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is refused, or None."""
    name = info.filename
    if not is_safe_name(name):
        return f"{name} has an unsafe path (absolute, a drive, or '..')"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"{name} is a symbolic link"
    if info.flag_bits & 0x1:
        return f"{name} is encrypted"
    if info.is_dir():
        return None
    if info.compress_type not in _METHODS:
        return f"{name} uses compression method {info.compress_type} (only stored or deflated)"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"{name} is {info.file_size:,} bytes uncompressed (limit {MAX_MEMBER_BYTES:,})"
    if (info.file_size > RATIO_EXEMPT_BYTES
            and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
        return (f"{name} expands to {info.file_size:,} bytes from {info.compress_size:,} "
                f"(more than {MAX_RATIO} times: a zip bomb is refused)")
    return None


@contextmanager
def _parsed(path: Path) -> Iterator[zipfile.ZipFile]:
    """The zip at path (never through a link), its directory parsed once it is small enough."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "rb") as stream:
        try:
            entries, directory = directory_bounds(stream)
            if entries > MAX_MEMBERS or directory > MAX_DIRECTORY_BYTES:
                raise TooManyMembers(f"{path.name} holds {entries:,} members "
                                     f"(at most {MAX_MEMBERS:,} are looked at)")
            stream.seek(0)
            archive = zipfile.ZipFile(stream)
        except ArchiveError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
                NotImplementedError, struct.error, OSError) as exc:
            # Any failure to parse a crafted directory is the archive's fault, not the run's.
            raise ArchiveError(f"{path.name} cannot be read as a zip file: {exc}") from exc
        with archive:
            if len(archive.infolist()) > MAX_MEMBERS:
                raise TooManyMembers(f"{path.name} holds {len(archive.infolist()):,} members "
                                     f"(at most {MAX_MEMBERS:,} are looked at)")
            yield archive


def refusal(archive: zipfile.ZipFile) -> str | None:
    """Why the archive may not be read (naming the member), or None."""
    total = 0
    for info in archive.infolist():
        problem = member_problem(info)
        if problem is not None:
            return problem
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        return f"the members expand to {total:,} bytes in all (limit {MAX_TOTAL_BYTES:,})"
    return None


def inspect(path: Path) -> tuple[list[str], str | None]:
    """The file members' names, and why the archive may not be read (None when it may);
    ArchiveError when it is no readable zip, TooManyMembers when it is too crowded to look at."""
    with _parsed(path) as archive:
        return ([n for n in archive.namelist() if not n.endswith("/")],
                refusal(archive))


@contextmanager
def open_archive(path: Path) -> Iterator[zipfile.ZipFile]:
    """The zip at path once the whole archive passed the checks (ArchiveError otherwise)."""
    with _parsed(path) as archive:
        problem = refusal(archive)
        if problem is not None:
            raise ArchiveError(f"{path.name}: {problem}")
        yield archive


@contextmanager
def open_listing(path: Path) -> Iterator[zipfile.ZipFile]:
    """The zip at path, its directory parsed within bounds but its members not yet checked:
    the caller checks each with member_problem before reading it with member_stream (so one
    bad member can be named without hiding the others' problems)."""
    with _parsed(path) as archive:
        yield archive


@contextmanager
def member_stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo,
                  where: str) -> Iterator[IO[bytes]]:
    """A member that passed member_problem, as a stream whose damage surfaces as
    ArchiveError naming `where`."""
    try:
        raw = archive.open(info)
    except (KeyError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise ArchiveError(f"{where} cannot be read: {exc}") from exc
    with raw, io.BufferedReader(_Checked(raw, where)) as stream:
        yield stream


@contextmanager
def open_member(path: Path, name: str) -> Iterator[IO[bytes]]:
    """A checked archive's member as a stream whose damage surfaces as ArchiveError."""
    with open_archive(path) as archive:
        try:
            raw = archive.open(name)
        except (KeyError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise ArchiveError(f"{path.name}: {name} cannot be read: {exc}") from exc
        with raw, io.BufferedReader(_Checked(raw, f"{path.name}: {name}")) as stream:
            yield stream


class _Checked(io.RawIOBase):
    """A member stream that turns decompression failures into ArchiveError naming it."""

    def __init__(self, raw: IO[bytes], where: str) -> None:
        self.raw = raw
        self.where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self.raw.read(len(buffer))
        except ArchiveError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            # (not OSError: a failing disk stops the run and leaves the epoch for the next one)
            raise ArchiveError(f"{self.where} is damaged: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)
