"""The fast path for an all-bulk OneRoster set: load the district's tables straight from the
files while a sibling database session checks the values in the same files in parallel.

Why it is safe: the load runs in a savepoint of the caller's transaction and is kept only if
the sibling finds every value in order, every reference resolves in the loaded tables, and the
load itself raised nothing (a failed cast, a repeated or missing sourcedId). On any doubt the
savepoint is rolled back and the caller takes the staged path, which finds and words every
problem with its file and line. The sibling only reads the uploaded files, into temporary
tables of its own.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from sftpd.formats import FileCount, ImportOutcome
from sftpd.formats.copying import copy_chunks
from sftpd.formats.oneroster.database import (
    COPY_CHUNK,
    SCHEMA,
    Entry,
    merge,
    stage,
    value_checks,
)
from sftpd.formats.oneroster.source import Source
from sftpd.formats.oneroster.spec import Column, all_tables, snake
from sftpd.formats.sibling import SiblingCheck


class _Doubt(Exception):
    """Something is (or may be) wrong: the staged path decides and explains."""


def applies(entries: list[Entry]) -> bool:
    return bool(entries) and all(e.mode == "bulk" for e in entries)


def loads_directly(entry: Entry) -> bool:
    """A file COPY can type by itself: exactly the specification's columns and no comma
    lists (an array needs its braces, which CSV fields do not have)."""
    return (entry.header == tuple(c.name for c in entry.table.columns)
            and all(c.kind != "list" for c in entry.table.columns))


def import_bulk(conn: psycopg.Connection[Any], source: Source,
                entries: list[Entry]) -> ImportOutcome | None:
    """Load an all-bulk set; None when it must go through the staged path instead (the
    caller's transaction is then as it was)."""
    sibling = SiblingCheck(conn, lambda session: _values_in_order(session, source, entries),
                           "oneroster-check")
    if not sibling.start():
        return None
    outcome = ImportOutcome()
    try:
        with conn.transaction():
            for entry in entries:
                outcome.files.append(_load(conn, source, entry))
            # Every check is a scan anti-joined to a set of keys with no statistics yet: hash
            # it (PostgreSQL runs it on parallel workers when a core is free).
            conn.execute("SET LOCAL enable_nestloop = off")
            conn.execute("SET LOCAL enable_mergejoin = off")
            by_table = {e.table.name: e for e in entries}
            for table, columns in all_tables().items():
                for column in columns:
                    if sibling.failed.is_set():
                        raise _Doubt
                    if (column.ref is not None and (table in by_table or column.ref in by_table)
                            and _dangling(conn, table, column)):
                        raise _Doubt
            if not sibling.clean():
                raise _Doubt
    except (_Doubt, psycopg.errors.DataError, psycopg.errors.IntegrityError,
            psycopg.errors.ObjectNotInPrerequisiteState):
        # (the last: COPY FREEZE refused; the staged path does not need it)
        return None
    finally:
        sibling.stop()
    return outcome


def _load(conn: psycopg.Connection[Any], source: Source, entry: Entry) -> FileCount:
    count = FileCount(entry.table.file, entry.mode)
    if not loads_directly(entry):
        rows = stage(conn, source, entry, ImportOutcome())
        if rows is None:
            raise _Doubt
        count.rows = rows
        if rows == 0:
            raise _Doubt
        merge(conn, entry, count)
        return count
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(entry.target)).fetchone()
    count.deleted = int(row[0]) if row else 0
    key = sql.Identifier(f"{entry.table.sql_name}_pkey")
    columns = sql.SQL(", ").join(sql.Identifier(c.sql_name) for c in entry.table.columns)
    # FORCE_NULL: a quoted empty field is NULL too, as the staged path's NULLIF makes it.
    # FREEZE (allowed because the table is truncated in this same subtransaction) writes the
    # rows already frozen, so the key build and the reference checks that read them next do
    # not have to set hint bits on (and write back) every page. TRUNCATE already hides the old
    # rows from older snapshots, so FREEZE takes nothing more from MVCC.
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true, FREEZE true, "
                       "FORCE_NULL ({}))").format(entry.target, columns, columns)
    with conn.transaction():
        conn.execute(sql.SQL("TRUNCATE {}").format(entry.target))
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(entry.target, key))
        with conn.cursor() as cur:
            with cur.copy(copy_sql) as copy, source.open(entry.table.file) as stream:
                for chunk in copy_chunks(stream, COPY_CHUNK):
                    copy.write(chunk)
            count.rows = count.added = cur.rowcount
        if count.rows == 0:
            raise _Doubt  # an empty bulk file never empties a table: the staged path refuses it
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (sourced_id)")
                     .format(entry.target, key))
    return count


def _dangling(conn: psycopg.Connection[Any], table: str, column: Column) -> bool:
    """Whether some value of the column points at no row of the referenced table, as this
    transaction has the tables: the set's rows where it replaces a table, the committed ones
    elsewhere."""
    assert column.ref is not None
    col = sql.Identifier(column.sql_name)
    return conn.execute(sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM (SELECT {} AS v FROM {}) x WHERE x.v <> '' AND NOT EXISTS "
        "(SELECT 1 FROM {} f WHERE f.sourced_id = x.v))").format(
        sql.SQL("unnest({})").format(col) if column.kind == "list" else col,
        sql.Identifier(SCHEMA, snake(table)), sql.Identifier(SCHEMA, snake(column.ref)))
    ).fetchone() == (True,)


def _values_in_order(session: psycopg.Connection[Any], source: Source,
                     entries: list[Entry]) -> bool:
    """COPY each file keeping only the rows a value check rejects: none, when all is well.
    (The checks run as COPY parses, so a clean file is never written anywhere.)"""
    with session.transaction():
        for entry in entries:
            bad = sql.SQL(" OR ").join(sql.SQL("({})").format(c)
                                       for c, _ in value_checks(entry, strict=False))
            if stage(session, source, entry, ImportOutcome(), where=bad) != 0:
                return False
    return True
