"""The fast path for a district's first students load: students.csv and guardians.csv COPYed
typed straight into the empty tables while a sibling session checks their values in parallel.

Why it is safe (as OneRoster's bulk load, sftpd/formats/oneroster/bulkload.py): the load runs
in a savepoint of the caller's transaction and is kept only if the sibling finds every value in
order (its `COPY ... WHERE <a check fails>` keeps no row) and the load itself raised nothing (a
date that is no real day, a blank required value, a repeated Student Id failing the key build).
On any doubt the savepoint is rolled back and the caller takes the staged path, which finds and
words every problem with its file, line and column. Guardian rows for a student not in the load
are skipped with the staged path's warnings.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from sftpd.formats import FileCount, ImportOutcome
from sftpd.formats.copying import copy_chunks
from sftpd.formats.generic_csv.database import (
    COPY_CHUNK,
    LISTED_PER_CHECK,
    SCHEMA,
    Entry,
    checks,
    file_lines,
    skipped_guardians,
    stage,
    stored_name,
)
from sftpd.formats.generic_csv.spec import GUARDIANS, STUDENTS
from sftpd.formats.sibling import SiblingCheck

# How the date type reads the four accepted forms as make_date does on the staged path: a
# four-digit year first is year-month-day, anything else month-day-year (the server's own
# default may be day-month-year).
DATESTYLE = "ISO, MDY"
_STUDENTS = sql.Identifier(SCHEMA, "students")
_GUARDIANS = sql.Identifier(SCHEMA, "guardians")
_ORPHAN = sql.SQL("NOT EXISTS (SELECT 1 FROM generic_csv.students s "
                  "WHERE s.student_id = g.student_id)")


class _Doubt(Exception):
    """Something is (or may be) wrong: the staged path decides and explains."""


def applies(conn: psycopg.Connection[Any], entries: list[Entry]) -> bool:
    """A load with students.csv into a district that has no students and no guardians yet."""
    return any(e.spec is STUDENTS for e in entries) and conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM generic_csv.students) "
        "AND NOT EXISTS (SELECT 1 FROM generic_csv.guardians)").fetchone() == (True,)


def import_first(conn: psycopg.Connection[Any], entries: list[Entry]) -> ImportOutcome | None:
    """Load the students and guardians of a first load; None when the staged path must do it
    instead (the caller's transaction is then as it was)."""
    fast = [e for e in entries if e.spec in (STUDENTS, GUARDIANS)]
    sibling = SiblingCheck(conn, lambda session: _values_in_order(session, fast),
                           "generic-csv-check")
    if not sibling.start():
        return None
    outcome = ImportOutcome()
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL DateStyle = '{DATESTYLE}'")
            conn.execute("LOCK TABLE generic_csv.students, generic_csv.guardians "
                         "IN SHARE ROW EXCLUSIVE MODE")
            if not applies(conn, entries):  # (someone was faster: merge as usual)
                raise _Doubt
            for entry in fast:
                if sibling.failed.is_set():
                    raise _Doubt
                count = FileCount(entry.spec.file, "merge", rows=_load(conn, entry))
                count.added = count.rows
                outcome.files.append(count)
                if entry.spec is GUARDIANS:
                    _skip_orphans(conn, entry, count, outcome)
            if not sibling.clean():
                raise _Doubt
    except (_Doubt, psycopg.errors.DataError, psycopg.errors.IntegrityError,
            psycopg.errors.ObjectNotInPrerequisiteState):
        # (the last: COPY FREEZE refused; the staged path does not need it)
        return None
    finally:
        sibling.stop()
    return outcome


def _load(conn: psycopg.Connection[Any], entry: Entry) -> int:
    """COPY the file typed into its empty table; the rows loaded."""
    target = _STUDENTS if entry.spec is STUDENTS else _GUARDIANS
    columns = sql.SQL(", ").join(sql.Identifier(stored_name(c)) for c in entry.spec.columns)
    # FORCE_NULL: a quoted empty field is NULL too, as the staged path's NULLIF makes it.
    # FREEZE (allowed because the table is truncated in this same subtransaction; it was empty)
    # writes the rows already frozen, so the key build and the checks that read them next do
    # not set hint bits on (and write back) every page.
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true, FREEZE true, "
                       "FORCE_NULL ({}))").format(target, columns, columns)
    with conn.transaction():
        conn.execute(sql.SQL("TRUNCATE {}").format(target))
        # The key and the index are built once after the rows rather than row by row (a
        # repeated Student Id fails the key build: the staged path then words it).
        if entry.spec is STUDENTS:
            conn.execute("ALTER TABLE generic_csv.students DROP CONSTRAINT students_pkey")
        else:
            conn.execute("DROP INDEX generic_csv.guardians_student_id")
        with conn.cursor() as cur:
            with cur.copy(copy_sql) as copy, entry.path.open("rb") as stream:
                for chunk in copy_chunks(stream, COPY_CHUNK):
                    copy.write(chunk)
            rows = cur.rowcount
        if entry.spec is STUDENTS:
            conn.execute("ALTER TABLE generic_csv.students ADD CONSTRAINT students_pkey "
                         "PRIMARY KEY (student_id)")
        else:
            conn.execute("CREATE INDEX guardians_student_id ON generic_csv.guardians "
                         "(student_id)")
    return rows


def _skip_orphans(conn: psycopg.Connection[Any], entry: Entry, count: FileCount,
                  outcome: ImportOutcome) -> None:
    """Take out the guardian rows whose student is not in the load, with a warning each."""
    # A scan anti-joined to a million keys with no statistics yet: hash it.
    conn.execute("SET LOCAL enable_nestloop = off")
    conn.execute("SET LOCAL enable_mergejoin = off")
    row = conn.execute(sql.SQL("SELECT count(*) FROM generic_csv.guardians g WHERE {}").format(
        _ORPHAN)).fetchone()
    conn.execute("SET LOCAL enable_nestloop = DEFAULT")
    conn.execute("SET LOCAL enable_mergejoin = DEFAULT")
    total = int(row[0]) if row else 0
    if not total:
        return
    skipped = [str(r[0]) for r in conn.execute(sql.SQL(
        "SELECT g.ctid::text AS at FROM generic_csv.guardians g WHERE {} ORDER BY g.ctid "
        "LIMIT {}").format(_ORPHAN, sql.Literal(LISTED_PER_CHECK))).fetchall()]
    # (the lines first: they are the rows' ranks in the table as COPY wrote it)
    lines = file_lines(conn, entry, skipped, table=_GUARDIANS)
    outcome.warnings.extend(skipped_guardians(skipped, lines, total))
    conn.execute(sql.SQL("DELETE FROM generic_csv.guardians g WHERE {}").format(_ORPHAN))
    count.added = count.rows - total


def _values_in_order(session: psycopg.Connection[Any], entries: list[Entry]) -> bool:
    """COPY each file keeping only the rows a value check rejects: none, when all is well.
    (The checks run as COPY parses, so a clean file is never written anywhere.)"""
    with session.transaction():
        for entry in entries:
            bad = sql.SQL(" OR ").join(sql.SQL("({})").format(c.bad)
                                       for c in checks(entry, strict=False))
            if stage(session, entry, ImportOutcome(), where=bad) != 0:
                return False
    return True
