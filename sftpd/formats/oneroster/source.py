"""Where a OneRoster set's CSV files are (a folder or one zip), its manifest and its headers."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sftpd.epochs.names import is_reserved
from sftpd.formats import Problem, archive

MANIFEST = "manifest.csv"
# A manifest is a few dozen short lines, a header one line: what is read of each is bounded, so
# a huge one (or a small zip that expands to one) costs no more than this.
MAX_MANIFEST_BYTES = 64 << 10
MAX_HEADER_BYTES = 64 << 10


@dataclass
class Source:
    """The CSV files of one set: loose in a folder of the epoch, or members of one zip."""

    epoch: Path
    folder: Path | None = None
    zip_path: Path | None = None
    members: dict[str, str] = field(default_factory=dict)
    # Why the zip may not be read (a member named), when it may not.
    refused: str | None = None

    @property
    def zipped(self) -> bool:
        return self.zip_path is not None

    def names(self) -> list[str]:
        """File names of the set (without folders), as uploaded."""
        if self.folder is not None:
            # Symlinks are never followed: they could point outside the district's tree.
            return sorted(p.name for p in self.folder.iterdir()
                          if p.is_file() and not p.is_symlink() and not is_reserved(p.name))
        return sorted(self.members)

    def has(self, name: str) -> bool:
        return name in self.names()

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self.folder is not None:
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as stream:
                yield stream
            return
        assert self.zip_path is not None
        with archive.open_member(self.zip_path, self.members[name]) as stream:
            yield stream

    def where(self, name: str) -> str:
        """The file's name as a person finds it in the upload."""
        if self.zip_path is not None:
            return f"{self.zip_path.name}:{self.members.get(name, name)}"
        assert self.folder is not None
        return str((self.folder / name).relative_to(self.epoch))


def locate(epoch: Path) -> Source | None:
    """Find manifest.csv at the top of the epoch, in its only folder, or in its only zip."""
    entries = [p for p in epoch.iterdir() if not is_reserved(p.name) and not p.is_symlink()]
    if (epoch / MANIFEST).is_file() and not (epoch / MANIFEST).is_symlink():
        return Source(epoch, folder=epoch)
    folders = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file()]
    inner = folders[0] / MANIFEST if len(folders) == 1 else None
    if inner is not None and not files and inner.is_file() and not inner.is_symlink():
        return Source(epoch, folder=folders[0])
    zips = [p for p in files if p.suffix.lower() == ".zip"]
    if len(zips) == 1 and not folders and len(files) == 1:
        return _zip_source(epoch, zips[0])
    return None


def _zip_source(epoch: Path, path: Path) -> Source | None:
    """The set in a zip; None when it is none (no single manifest.csv in it, not a readable
    zip, or too many members to look at: then it waits for staff like any unknown upload)."""
    try:
        names, refused = archive.inspect(path)
    except archive.ArchiveError:
        return None
    manifests = [n for n in names if n.rsplit("/", 1)[-1] == MANIFEST]
    if len(manifests) != 1:
        return None
    prefix = manifests[0][: -len(MANIFEST)]
    members = {n[len(prefix):]: n for n in names
               if n.startswith(prefix) and "/" not in n[len(prefix):]}
    return Source(epoch, zip_path=path, members=members, refused=refused)


class _Bounded(io.RawIOBase):
    """At most `limit` bytes of a stream; reading past them raises TooLong."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw = raw
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            if self.raw.read(1):
                raise TooLong
            return 0
        data = self.raw.read(min(len(buffer), self.left))
        self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)


class TooLong(Exception):
    """A bounded read met more bytes than it allows."""


def _text(raw: IO[bytes], limit: int) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedReader(_Bounded(raw, limit)), encoding="utf-8-sig",
                            newline="")


def read_manifest(source: Source) -> tuple[dict[str, str], list[Problem]]:
    """The manifest's properties, and any problem with its own shape."""
    problems: list[Problem] = []
    props: dict[str, str] = {}
    rows: list[list[str]] = []
    with source.open(MANIFEST) as raw:
        try:
            rows.extend(csv.reader(_text(raw, MAX_MANIFEST_BYTES)))
        except TooLong:
            # Its first lines still say what the set is; the epoch fails with this problem.
            props = {r[0]: r[1] for r in rows[1:] if len(r) == 2}
            return props, [Problem(f"the manifest is larger than {MAX_MANIFEST_BYTES:,} bytes "
                                   "(a manifest has a few dozen lines)", MANIFEST)]
        except (UnicodeDecodeError, csv.Error) as exc:
            return {}, [Problem(f"cannot read manifest: {exc}", MANIFEST)]
    if not rows or rows[0] != ["propertyName", "value"]:
        found = ",".join(rows[0]) if rows else "an empty file"
        problems.append(Problem(f"header must be 'propertyName,value', found '{found}'",
                                MANIFEST, 1))
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not v for v in row):
            continue
        if len(row) != 2:
            problems.append(Problem(f"expected 2 fields, found {len(row)}", MANIFEST, number))
            continue
        if row[0] in props:
            problems.append(Problem(f"property '{row[0]}' appears twice", MANIFEST, number))
        props[row[0]] = row[1]
    return props, problems


def read_header(source: Source, name: str) -> list[str] | None:
    """The first CSV record of a file, or None for an empty file."""
    with source.open(name) as raw:
        try:
            return next(csv.reader(_text(raw, MAX_HEADER_BYTES)), None)
        except TooLong:
            raise HeaderTooLong(f"the header line is longer than {MAX_HEADER_BYTES:,} bytes") \
                from None


class HeaderTooLong(ValueError):
    """A file's first line runs on past what a header can be."""


def has_data_rows(source: Source, name: str) -> bool:
    """Whether a record follows the header (blank lines are not records). Reads only as far as
    the first one; a file whose second record cannot be read counts as having one, so the import
    reports what is wrong with it."""
    with source.open(name) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        records = csv.reader(text)
        try:
            next(records, None)
            return any(record for record in records)
        except (csv.Error, UnicodeDecodeError):
            return True


def header_problems(found: list[str], expected: list[str]) -> list[str]:
    """What is wrong with a header: missing, miscased, unknown or misordered columns."""
    extra = found[len(expected):]
    if found[: len(expected)] == expected and all(c.startswith("metadata.") for c in extra):
        return []
    problems: list[str] = []
    by_lower = {c.lower(): c for c in found}
    for column in expected:
        if column in found:
            continue
        if column.lower() in by_lower:
            problems.append(f"column '{by_lower[column.lower()]}' must be spelled '{column}' "
                            "(column names are case-sensitive)")
        else:
            problems.append(f"required column '{column}' is missing")
    expected_lower = {c.lower() for c in expected}
    for column in found:
        if column.lower() not in expected_lower and not column.startswith("metadata."):
            problems.append(f"unknown column '{column}' (extensions must be named "
                            "'metadata.<name>' and come after the specification's columns)")
    if not problems:
        problems.append("columns are out of order; the specification's order is: "
                        + ",".join(expected) + " (then any metadata.* columns)")
    return problems
