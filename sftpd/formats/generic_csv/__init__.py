"""SameGoal's Generic CSV API (students, guardians, users, user_roles, absences): recognize an
epoch of it, check its file names and headers exactly, import it by the guide's load rules."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from sftpd.epochs.names import is_reserved
from sftpd.formats import FileCount, ImportOutcome, Problem, Recognition, Validation
from sftpd.formats.generic_csv import firstload
from sftpd.formats.generic_csv.database import (
    Entry,
    Loaded,
    duplicates,
    find_problems,
    merge_all,
    prepare,
    repeats_key,
    stage,
    strict_helpers,
    students_empty,
)
from sftpd.formats.generic_csv.spec import (
    FILES,
    GUARDIANS,
    STUDENTS,
    USER_ROLES,
    USERS,
    FileSpec,
    header_problems,
    meant_file,
)

# Headers are read from at most this many bytes (the longest real one is under 400).
HEADER_LIMIT = 64 * 1024
# A OneRoster set has this; it is never a Generic CSV API epoch.
_ONEROSTER_MANIFEST = "manifest.csv"
# Which columns identify a row, for the repeated-row check, per file.
_KEYS: dict[str, tuple[list[str], str]] = {
    STUDENTS.file: (["Student Id"], "the same Student Id"),
    USERS.file: (["Email"], "the same Email (in any case)"),
    USER_ROLES.file: (["Role", "Form"], "the same Role and Form"),
}


@dataclass
class Plan:
    """The epoch's API files, in load order."""

    entries: list[Entry]


def _top_files(epoch: Path) -> list[Path]:
    return sorted(p for p in epoch.iterdir()
                  if not is_reserved(p.name) and p.is_file() and not p.is_symlink())


def read_header(path: Path) -> list[str] | None:
    """The first CSV record (a UTF-8 byte order mark is dropped), or None for an empty file;
    read from the first HEADER_LIMIT bytes only, so a hostile file cannot fill the memory."""
    with path.open("rb") as raw:
        data = raw.read(HEADER_LIMIT)
    if len(data) == HEADER_LIMIT:
        if b"\n" not in data:
            raise csv.Error(f"no line end in the first {HEADER_LIMIT // 1024} KiB")
        data = data[: data.rindex(b"\n") + 1]  # (never half a UTF-8 character)
    return next(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")), None)


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalpha())


class GenericCsvFormat:
    """SameGoal's Generic CSV API: up to five CSV files directly in the epoch."""

    name = "generic-csv"

    def recognize(self, epoch: Path) -> Recognition | None:
        """Claimed when there is no OneRoster manifest and a file named (or nearly named) as
        an API file has a header sharing a column with that file (so a misnamed file or
        column is reported, while another system's export waits for staff)."""
        if (epoch / _ONEROSTER_MANIFEST).exists():
            return None
        found: list[str] = []
        for path in _top_files(epoch):
            meant = meant_file(path.name)
            if meant is None:
                continue
            try:
                header = read_header(path) or []
            except (OSError, UnicodeDecodeError, csv.Error):
                continue
            expected = {_squash(n) for c in FILES[meant].columns for n in (c.name, *c.aliases)}
            if any(_squash(h) in expected for h in header):
                found.append(path.name)
        if not found:
            return None
        return Recognition(self.name, _describe(found))

    def validate(self, epoch: Path) -> Validation:
        result = Validation(_describe([p.name for p in _top_files(epoch)]))
        entries: dict[str, Entry] = {}
        for path in sorted(epoch.iterdir()):
            if is_reserved(path.name):
                continue
            if path.is_symlink() or not path.is_file():
                result.warnings.append(Problem(
                    f"'{path.name}' is not a plain file; ignored (the CSV files go directly in "
                    "the epoch directory)"))
                continue
            meant = meant_file(path.name)
            if meant is None:
                if path.name.lower().endswith(".csv"):
                    result.errors.append(Problem(
                        "misnamed file: not a Generic CSV API file name (expected "
                        + ", ".join(FILES) + ")", path.name))
                else:
                    result.warnings.append(Problem("not a CSV file; ignored", path.name))
                continue
            if meant != path.name:
                result.errors.append(Problem(
                    f"misnamed file: it must be named '{meant}' (file names are exact)",
                    path.name))
                continue
            spec = FILES[meant]
            header = _header(path, spec, result)
            if header is None:
                continue
            wrong = header_problems(header, spec)
            result.errors.extend(Problem(f"column '{column}': {problem}" if column else problem,
                                         spec.file, 1) for column, problem in wrong)
            if not wrong:
                entries[spec.file] = Entry(spec, path)
        if not entries and not result.errors:
            result.errors.append(Problem("no Generic CSV API file (" + ", ".join(FILES)
                                         + ") in the epoch"))
        result.plan = Plan([entries[f] for f in FILES if f in entries])
        return result

    def import_(self, conn: psycopg.Connection[Any], epoch: Path,
                validation: Validation) -> ImportOutcome:
        plan = validation.plan
        if not isinstance(plan, Plan):
            raise TypeError("import_ needs the Validation that validate() returned")
        prepare(conn)
        outcome, entries = ImportOutcome(), plan.entries
        if firstload.applies(conn, entries):
            first = firstload.import_first(conn, entries)
            if first is not None:  # students and guardians are in: the staged path does the rest
                outcome = first
                entries = [e for e in entries if e.spec not in (STUDENTS, GUARDIANS)]
        loaded = Loaded({}, {})
        for entry in entries:
            rows = stage(conn, entry, outcome)
            if rows is None:
                continue
            count = FileCount(entry.spec.file, "merge", rows=rows)
            outcome.files.append(count)
            loaded.entries[entry.spec.file] = entry
            loaded.counts[entry.spec.file] = count
            found, total = find_problems(conn, entry, strict=False)
            outcome.errors.extend(found)
            outcome.error_count += total
        if outcome.errors or self._repeats(conn, loaded):
            _recheck_strictly(conn, loaded, outcome)
            return outcome
        try:
            with conn.transaction():
                merge_all(conn, loaded, outcome)
        except (psycopg.errors.DataError, psycopg.errors.UniqueViolation,
                psycopg.errors.CardinalityViolation) as exc:
            # A date of the right shape that is not a real day, or a key given twice: find
            # and word every such row.
            _recheck_strictly(conn, loaded, outcome)
            if not outcome.errors:
                outcome.errors.append(Problem(
                    f"a value cannot be stored: {exc.diag.message_primary or exc}"))
                outcome.error_count += 1
        return outcome


    @staticmethod
    def _repeats(conn: psycopg.Connection[Any], loaded: Loaded) -> bool:
        """A key given twice in one file (the first students load leaves that to its key
        build, which is cheaper than a separate pass over a million rows)."""
        for name, entry in loaded.entries.items():
            if name not in _KEYS or (name == STUDENTS.file and students_empty(conn)):
                continue
            if repeats_key(conn, entry, _KEYS[name][0]):
                return True
        return False


def _recheck_strictly(conn: psycopg.Connection[Any], loaded: Loaded,
                      outcome: ImportOutcome) -> None:
    """The epoch fails anyway: word every bad value (real calendar dates included) and
    every repeated key, beside the files COPY could not read."""
    kept = [p for p in outcome.errors if p.message.startswith("cannot read the file")]
    outcome.errors, outcome.error_count = [], len(kept)
    strict_helpers(conn)
    for name, entry in loaded.entries.items():
        found, total = find_problems(conn, entry, strict=True)
        outcome.errors.extend(found)
        outcome.error_count += total
        if name in _KEYS:
            repeated = duplicates(conn, entry, *_KEYS[name])
            outcome.errors.extend(repeated)
            outcome.error_count += len(repeated)
    outcome.errors += kept
    outcome.errors.sort(key=lambda p: (list(FILES).index(p.file) if p.file in FILES else 9,
                                       p.line or 0))


def _header(path: Path, spec: FileSpec, result: Validation) -> list[str] | None:
    try:
        header = read_header(path)
    except UnicodeDecodeError as exc:
        result.errors.append(Problem(f"the header is not UTF-8 text: {exc.reason}", spec.file,
                                     1))
        return None
    except csv.Error as exc:
        result.errors.append(Problem(f"the header is not RFC 4180 CSV: {exc}", spec.file, 1))
        return None
    if header is None:
        result.errors.append(Problem("the file is empty; a header row is required", spec.file,
                                     1))
    return header


def _describe(names: list[str]) -> str:
    files = [n for n in names if n in FILES]
    return "Generic CSV API (" + (", ".join(files) if files else "no API files") + ")"
