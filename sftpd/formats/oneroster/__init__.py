"""The OneRoster 1.1 / 1.2 CSV format: recognize a set, check its layout, import it."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from sftpd.formats import ImportOutcome, Problem, Recognition, Validation
from sftpd.formats.oneroster import bulkload
from sftpd.formats.oneroster.database import Entry, import_staged, prepare
from sftpd.formats.oneroster.source import (
    MANIFEST,
    HeaderTooLong,
    Source,
    has_data_rows,
    header_problems,
    locate,
    read_header,
    read_manifest,
)
from sftpd.formats.oneroster.spec import MODES, NOT_IMPORTED, VERSIONS, layouts_for, tables_for


@dataclass
class Plan:
    """What to import: the set's files, in dependency order, with their modes."""

    source: Source
    version: str
    entries: list[Entry]


class OneRosterFormat:
    """OneRoster CSV, loose or zipped, bulk or delta (per file, as the manifest says)."""

    name = "oneroster"

    def recognize(self, epoch: Path) -> Recognition | None:
        source = locate(epoch)
        if source is None:
            return None
        if source.refused is not None:
            # A zip with one manifest.csv is meant as a set: claim it so that validate tells
            # the district which member made it unreadable.
            return Recognition(self.name, _describe(source, {}))
        try:
            props, _ = read_manifest(source)
        except (OSError, zipfile.BadZipFile, KeyError):
            return None
        if "oneroster.version" not in props:
            return None
        return Recognition(self.name, _describe(source, props))

    def validate(self, epoch: Path) -> Validation:
        source = locate(epoch)
        if source is None:
            return Validation("no OneRoster set", errors=[Problem(
                "no manifest.csv found (at the top of the epoch, in its only folder, or in "
                "its only zip file)")])
        if source.refused is not None:
            return Validation(_describe(source, {}), errors=[Problem(
                source.refused, source.zip_path.name if source.zip_path else None)])
        props, problems = read_manifest(source)
        result = Validation(_describe(source, props), errors=problems)
        version = props.get("oneroster.version", "")
        if version not in VERSIONS:
            result.errors.append(Problem(
                f"oneroster.version '{version}' is not supported (expected one of "
                f"{', '.join(VERSIONS)})", MANIFEST))
            return result
        if props.get("manifest.version", "1.0") != "1.0":
            result.warnings.append(Problem(
                f"manifest.version is '{props['manifest.version']}', expected '1.0'", MANIFEST))
        tables = tables_for(version)
        present = set(source.names())
        modes: dict[str, str] = {}
        for key, value in props.items():
            if not key.startswith("file."):
                continue
            name = key[len("file."):]
            if value not in MODES:
                result.errors.append(Problem(
                    f"{key} is '{value}', expected one of {', '.join(MODES)}", MANIFEST))
            elif name in tables:
                modes[name] = value
            elif value != "absent":
                why = ("is not imported (gradebook and resources files are not part of "
                       "rostering)" if name in NOT_IMPORTED else "is not a OneRoster file")
                result.warnings.append(Problem(f"{key} is '{value}' but {name}.csv {why}; "
                                               "the file is ignored", MANIFEST))
        entries: list[Entry] = []
        for table in tables.values():
            mode = modes.get(table.name, "absent")
            if mode == "absent":
                if table.file in present:
                    result.warnings.append(Problem(
                        f"{table.file} is present but the manifest does not list it as bulk "
                        "or delta; the file is ignored", MANIFEST))
                continue
            if table.file not in present:
                result.errors.append(Problem(
                    f"file.{table.name} is '{mode}' but {table.file} is missing", MANIFEST))
                continue
            header = _header(source, table.file, result)
            if header is None:
                continue
            # The first layout the header matches; otherwise the current layout's complaints.
            layout, wrong = table, header_problems(header, [c.name for c in table.columns])
            for other in layouts_for(version, table)[1:]:
                if wrong and not header_problems(header, [c.name for c in other.columns]):
                    layout, wrong = other, []
            result.errors.extend(Problem(w, table.file, 1) for w in wrong)
            if wrong:
                continue
            if not has_data_rows(source, table.file):
                # The binding: "Files that contain no data rows are NOT permitted". A bulk file
                # replaces the table, so an empty one would delete every row: refuse it.
                problem = Problem(f"file.{table.name} is '{mode}' but {table.file} has no data "
                                  "rows (the binding does not permit empty files)", table.file, 2)
                if mode == "bulk":
                    result.errors.append(Problem(problem.message + "; an empty bulk file would "
                                                 "delete every row, so nothing is imported",
                                                 table.file, 2))
                else:
                    result.warnings.append(Problem(problem.message + "; it changes nothing",
                                                   table.file, 2))
                continue
            entries.append(Entry(layout, mode, tuple(header)))
        known = {t.file for t in tables.values()} | {MANIFEST} | {f"{n}.csv"
                                                                 for n in NOT_IMPORTED}
        for name in sorted(present - known):
            result.warnings.append(Problem(f"{name} is not part of OneRoster; ignored"))
        if not entries and not result.errors:
            result.warnings.append(Problem("the manifest lists no file to import", MANIFEST))
        result.plan = Plan(source, version, entries)
        return result

    def import_(self, conn: psycopg.Connection[Any], epoch: Path,
                validation: Validation) -> ImportOutcome:
        plan = validation.plan
        if not isinstance(plan, Plan):
            raise TypeError("import_ needs the Validation that validate() returned")
        prepare(conn)
        if bulkload.applies(plan.entries):
            outcome = bulkload.import_bulk(conn, plan.source, plan.entries)
            if outcome is not None:
                return outcome
        return import_staged(conn, plan.source, plan.entries)


def _header(source: Source, name: str, result: Validation) -> list[str] | None:
    try:
        header = read_header(source, name)
    except UnicodeDecodeError as exc:
        result.errors.append(Problem(f"header is not UTF-8 text: {exc.reason}", name, 1))
        return None
    except HeaderTooLong as exc:
        result.errors.append(Problem(str(exc), name, 1))
        return None
    if header is None:
        result.errors.append(Problem("the file is empty; a header line is required", name, 1))
    return header


def _describe(source: Source, props: dict[str, str]) -> str:
    modes = sorted({v for k, v in props.items() if k.startswith("file.") and v != "absent"})
    how = ", ".join(modes) if modes else "no files"
    where = f"zipped in {source.zip_path.name}" if source.zip_path else "loose CSV files"
    return f"OneRoster {props.get('oneroster.version', '?')} CSV ({how}; {where})"
