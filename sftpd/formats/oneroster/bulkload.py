"""The fast path for an all-bulk OneRoster set: load the district's tables straight from the
files while a sibling database session checks the same files in parallel.

Why it is safe: the load runs in a savepoint of the caller's transaction and is kept only if
the sibling finds every value and every reference in order and the load itself raised nothing
(a failed cast, a repeated or missing sourcedId). On any doubt the savepoint is rolled back and
the caller takes the staged path, which finds and words every problem with its file and line.
The sibling only reads: the uploaded files into its own temporary tables, and district tables
that this set does not replace (committed, so exactly what they will be after this import).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import psycopg
from psycopg import sql

from sftpd.formats import FileCount, ImportOutcome
from sftpd.formats.oneroster.database import (
    COPY_CHUNK,
    SCHEMA,
    TEMP_BUFFERS,
    WORK_MEM,
    Entry,
    converted,
    merge,
    stage,
    value_checks,
)
from sftpd.formats.oneroster.source import Source
from sftpd.formats.oneroster.spec import Column, all_tables, snake

# The sibling never waits long for a lock: a district table locked by someone else (or by the
# import itself, on a schema upgrade) just means "take the staged path".
_SIBLING_LOCK_TIMEOUT = "2s"


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
    # The reference checks are shared: whichever session is free takes the next one (the import
    # session on the loaded tables, the sibling on its staged copy), so neither waits long for
    # the other. Bigger files come later in the specification's order: take them first.
    checks: queue.SimpleQueue[tuple[str, Column]] = queue.SimpleQueue()
    by_table = {e.table.name: e for e in entries}
    for table, columns in reversed(all_tables().items()):
        for column in columns:
            if column.ref is not None and (table in by_table or column.ref in by_table):
                checks.put((table, column))
    sibling = _SiblingCheck(conn, source, entries, checks)
    if not sibling.start():
        return None
    outcome = ImportOutcome()
    try:
        with conn.transaction():
            for entry in entries:
                outcome.files.append(_load(conn, source, entry))
            conn.execute("SET LOCAL enable_nestloop = off")
            conn.execute("SET LOCAL enable_mergejoin = off")
            while not sibling.failed.is_set() and (check := _next(checks)) is not None:
                if _dangling_loaded(conn, *check):
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
                while chunk := stream.read(COPY_CHUNK):
                    copy.write(chunk)
            count.rows = count.added = cur.rowcount
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (sourced_id)")
                     .format(entry.target, key))
    return count


def _next(checks: queue.SimpleQueue[tuple[str, Column]]) -> tuple[str, Column] | None:
    try:
        return checks.get_nowait()
    except queue.Empty:
        return None


def _dangling_loaded(conn: psycopg.Connection[Any], table: str, column: Column) -> bool:
    """The same question as _dangling, asked of the tables as this transaction has them."""
    assert column.ref is not None
    col = sql.Identifier(column.sql_name)
    return conn.execute(sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM (SELECT {} AS v FROM {}) x WHERE x.v <> '' AND NOT EXISTS "
        "(SELECT 1 FROM {} f WHERE f.sourced_id = x.v))").format(
        sql.SQL("unnest({})").format(col) if column.kind == "list" else col,
        sql.Identifier(SCHEMA, snake(table)), sql.Identifier(SCHEMA, snake(column.ref)))
    ).fetchone() == (True,)


class _SiblingCheck:
    """A second session that stages the set and checks its values and references."""

    def __init__(self, conn: psycopg.Connection[Any], source: Source, entries: list[Entry],
                 checks: queue.SimpleQueue[tuple[str, Column]]) -> None:
        self.origin = conn
        self.source = source
        self.entries = entries
        self.checks = checks
        self.verdict = False
        self.failed = threading.Event()
        self.session: psycopg.Connection[Any] | None = None
        self.thread = threading.Thread(target=self._run, name="oneroster-check", daemon=True)

    def start(self) -> bool:
        try:
            self.session = psycopg.connect(
                self.origin.info.dsn, password=self.origin.info.password, autocommit=True,
                application_name="sftpd process-epochs (checks)")
        except psycopg.Error:
            return False
        self.thread.start()
        return True

    def clean(self) -> bool:
        self.thread.join()
        return self.verdict

    def stop(self) -> None:
        if self.session is None:
            return
        if self.thread.is_alive():
            self.session.cancel_safe()
            self.thread.join()
        self.session.close()

    def _run(self) -> None:
        assert self.session is not None
        try:
            self.verdict = _all_in_order(self.session, self.source, self.entries, self.checks)
        except psycopg.Error:
            self.verdict = False
        if not self.verdict:
            self.failed.set()


def _all_in_order(session: psycopg.Connection[Any], source: Source, entries: list[Entry],
                  checks: queue.SimpleQueue[tuple[str, Column]]) -> bool:
    session.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
    with session.transaction():
        session.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        session.execute(f"SET LOCAL lock_timeout = '{_SIBLING_LOCK_TIMEOUT}'")
        for entry in entries:
            if stage(session, source, entry, ImportOutcome()) is None:
                return False
        for entry in entries:
            condition = sql.SQL(" OR ").join(sql.SQL("({})").format(c)
                                             for c, _ in value_checks(entry, strict=False))
            if _exists(session, sql.SQL("SELECT 1 FROM {} WHERE {}").format(entry.stage,
                                                                              condition)):
                return False
        # Every check is a scan anti-joined to a set of keys with no statistics yet: hash it.
        session.execute("SET LOCAL enable_nestloop = off")
        session.execute("SET LOCAL enable_mergejoin = off")
        by_table = {e.table.name: e for e in entries}
        while (check := _next(checks)) is not None:
            if _dangling(session, *check, by_table):
                return False
    return True


def _exists(session: psycopg.Connection[Any], query: sql.Composable) -> bool:
    return session.execute(sql.SQL("SELECT EXISTS ({})").format(query)).fetchone() == (True,)


def _dangling(session: psycopg.Connection[Any], table: str, column: Column,
              by_table: dict[str, Entry]) -> bool:
    """Whether some value of the column will point at no row once the set is imported: the
    set's own rows for the tables it replaces, the committed rows for the others."""
    assert column.ref is not None
    entry, referenced = by_table.get(table), by_table.get(column.ref)
    if entry is not None:
        if column.name not in {c.name for c in entry.table.columns}:
            return False  # a column of the other version: NULL after a bulk replace
        value = converted(entry, entry.table.column(column.name))
        values = sql.SQL("SELECT {} AS v FROM {}").format(
            sql.SQL("unnest({})").format(value) if column.kind == "list" else value,
            entry.stage)
    else:
        if not _committed(session, table):
            return False  # created by this import: empty
        col = sql.Identifier(column.sql_name)
        values = sql.SQL("SELECT {} AS v FROM {}").format(
            sql.SQL("unnest({})").format(col) if column.kind == "list" else col,
            sql.Identifier(SCHEMA, snake(table)))
    keys: sql.Composable
    if referenced is not None:
        keys = sql.SQL("SELECT {} AS k FROM {}").format(
            referenced.staged(referenced.table.column("sourcedId")), referenced.stage)
    elif _committed(session, column.ref):
        keys = sql.SQL("SELECT sourced_id AS k FROM {}").format(
            sql.Identifier(SCHEMA, snake(column.ref)))
    else:
        keys = sql.SQL("SELECT NULL::text AS k WHERE false")
    return _exists(session, sql.SQL(
        "SELECT 1 FROM ({}) x WHERE x.v <> '' AND NOT EXISTS "
        "(SELECT 1 FROM ({}) f WHERE f.k = x.v)").format(values, keys))


def _committed(session: psycopg.Connection[Any], table: str) -> bool:
    name = f"{SCHEMA}.{snake(table)}"
    return session.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)
