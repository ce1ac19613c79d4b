"""The interface every upload format implements, and the registry of the formats we know."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import psycopg


@dataclass(frozen=True)
class Problem:
    """One error or warning, pointing at a file and line when there is one."""

    message: str
    file: str | None = None
    line: int | None = None

    def describe(self) -> str:
        where = self.file or "epoch"
        if self.line is not None:
            where = f"{where} line {self.line}"
        return f"{where}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class Recognition:
    """A format's claim on an epoch: its name and a one-line description for people."""

    format: str
    description: str


@dataclass
class FileCount:
    """What importing one file did to the database."""

    file: str
    mode: str
    rows: int = 0
    added: int = 0
    changed: int = 0
    deleted: int = 0


@dataclass
class Validation:
    """The result of checking an epoch without the database; `plan` is private to the format."""

    description: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    plan: object = None


@dataclass
class ImportOutcome:
    """What an import did, or why it must be rolled back (any error means roll back)."""

    files: list[FileCount] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    error_count: int = 0
    warnings: list[Problem] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


class Format(Protocol):
    """A pluggable upload format. It never commits: the caller owns the transaction."""

    name: str

    def recognize(self, epoch: Path) -> Recognition | None:
        """Claim the epoch (cheaply, without reading it all) or return None."""
        ...

    def validate(self, epoch: Path) -> Validation:
        """Check what can be checked without the database (layout, manifest, headers)."""
        ...

    def import_(self, conn: psycopg.Connection[Any], epoch: Path,
                validation: Validation) -> ImportOutcome:
        """Check values and references and merge into the district's tables, inside the
        caller's open transaction; errors in the outcome make the caller roll back."""
        ...


@dataclass(frozen=True)
class Published:
    """What a format published after its import: the file (relative to the tree's root, e.g.
    downloads/prior.zip) and its SHA-256."""

    file: str
    sha256: str


@runtime_checkable
class Publishing(Protocol):
    """A format that also publishes what it imported (a prior-system archive in downloads/)."""

    def publish(self, epoch: Path) -> Published:
        """Publish the epoch's content after its import committed; idempotent, so the rerun
        after a crash between the commit and the move completes it."""
        ...


def registered_formats(district_domain: str = "") -> dict[str, Format]:
    """Every format this build knows, by name, in the order they are asked to recognize;
    district_domain is what a prior-system archive's top directory must be."""
    from sftpd.formats.generic_csv import GenericCsvFormat
    from sftpd.formats.oneroster import OneRosterFormat
    from sftpd.formats.prior_system_pdfs import PriorSystemPdfsFormat

    # OneRoster first: its manifest is unambiguous; Generic CSV never claims an epoch with one.
    # Prior-system PDFs claim only an epoch of one zip or one directory in their layout.
    formats: list[Format] = [OneRosterFormat(), GenericCsvFormat(),
                             PriorSystemPdfsFormat(district_domain)]
    return {f.name: f for f in formats}
