"""OneRoster in PostgreSQL: the district's tables, COPY into staging, value and reference checks,
and the merge (bulk replaces a table, delta applies adds, changes and deletions)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from sftpd.formats import FileCount, ImportOutcome, Problem
from sftpd.formats.copying import copy_chunks
from sftpd.formats.oneroster.source import Source
from sftpd.formats.oneroster.spec import EXTENSION_PREFIX, Column, Table, all_tables, snake
from sftpd.formats.staged import offending_rows

SCHEMA = "oneroster"
TEMP_BUFFERS = "256MB"
WORK_MEM = "256MB"
# How many problems of one kind (one check on one file) are listed; all are counted.
LISTED_PER_CHECK = 200
COPY_CHUNK = 1 << 20
EMPTY_BULK = "a bulk file with no data rows would delete every row; nothing is imported"

_HELPERS = r"""
CREATE OR REPLACE FUNCTION pg_temp.is_date(x text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN x ~ '^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$'
    THEN substr(x, 9, 2)::int <= extract(day from make_date(substr(x, 1, 4)::int,
           substr(x, 6, 2)::int, 1) + interval '1 month - 1 day')
    ELSE false END
$$;
CREATE OR REPLACE FUNCTION pg_temp.is_datetime(x text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN x ~ ('^\d{4}-\d\d-\d\d(T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?'
                       '(Z|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)?)?$')
    THEN pg_temp.is_date(substr(x, 1, 10)) ELSE false END
$$;
"""

# Identifiers compare bytewise (COLLATE "C"): keys, joins and sorts stay fast under any
# database locale, and sourcedIds are opaque strings anyway.
_SQL_TYPES = {"text": 'text COLLATE "C"', "enum": 'text COLLATE "C"', "bool": "boolean",
              "date": "date", "datetime": "timestamptz", "year": "integer",
              "list": 'text[] COLLATE "C"'}


@dataclass(frozen=True)
class Entry:
    """One file of the epoch to import: its table spec, mode and header as uploaded."""

    table: Table
    mode: str
    header: tuple[str, ...]

    @property
    def stage(self) -> sql.Identifier:
        return sql.Identifier("pg_temp", f"s_{self.table.sql_name}")

    @property
    def target(self) -> sql.Identifier:
        return sql.Identifier(SCHEMA, self.table.sql_name)

    def staged(self, column: Column) -> sql.Identifier:
        """The staging column that holds a specification column (by header position)."""
        return sql.Identifier(f"c{self.header.index(column.name) + 1}")


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the district's OneRoster tables (the union of all versions' columns) if missing."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    for table, columns in all_tables().items():
        ident = sql.Identifier(SCHEMA, snake(table))
        defs = [sql.SQL("{} {}").format(sql.Identifier(c.sql_name), sql.SQL(_SQL_TYPES[c.kind]))
                for c in columns if c.name != "sourcedId"]
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} "
                             "(sourced_id text COLLATE \"C\" PRIMARY KEY, {})")
                     .format(ident, sql.SQL(", ").join(defs)))
        # ALTER TABLE locks the table exclusively even when it adds nothing: only when needed.
        present = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped", (f"{SCHEMA}.{snake(table)}",)).fetchall()}
        missing = [d for c, d in zip([c for c in columns if c.name != "sourcedId"], defs,
                                     strict=True) if c.sql_name not in present]
        if missing:
            conn.execute(sql.SQL("ALTER TABLE {} {}").format(ident, sql.SQL(", ").join(
                sql.SQL("ADD COLUMN IF NOT EXISTS ") + d for d in missing)))


def prepare(conn: psycopg.Connection[Any]) -> None:
    """The district's tables and this transaction's settings, before any import."""
    ensure_schema(conn)
    conn.execute(_HELPERS)
    # Staging lives in temporary tables (no WAL); let them and the checks' hash tables stay in
    # memory. temp_buffers is per session and only takes effect before the first temp table.
    conn.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
    conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    # Primary keys are built after each bulk load: sort a million keys in memory.
    conn.execute(f"SET LOCAL maintenance_work_mem = '{WORK_MEM}'")
    conn.execute("SET LOCAL timezone = 'UTC'")


def import_staged(conn: psycopg.Connection[Any], source: Source,
                  entries: list[Entry]) -> ImportOutcome:
    """Stage, check and merge every entry inside the caller's transaction (after prepare)."""
    outcome = ImportOutcome()
    staged: list[Entry] = []
    for entry in entries:
        rows = stage(conn, source, entry, outcome)
        if rows is None:
            continue
        outcome.files.append(FileCount(entry.table.file, entry.mode, rows=rows))
        staged.append(entry)
        if rows == 0 and entry.mode == "bulk":
            # validate() refuses these already; this keeps a bulk merge from ever emptying a
            # table whatever the caller checked.
            _add(outcome, [Problem(EMPTY_BULK, entry.table.file, 2)], 1)
        _add(outcome, *_check_values(conn, entry, strict=False))
    if outcome.errors:
        _recheck_strictly(conn, staged, outcome)
        return outcome
    for entry, count in zip(staged, outcome.files, strict=True):
        try:
            with conn.transaction():
                merge(conn, entry, count)
        except (psycopg.errors.DataError, psycopg.errors.UniqueViolation,
                psycopg.errors.CardinalityViolation) as exc:
            # A value passed the cheap shape checks but is not a real date (or year), or a
            # sourcedId repeats (the key or the upsert says so): name every such line.
            _recheck_strictly(conn, staged, outcome)
            if not outcome.errors:
                _add(outcome, [Problem(f"a value cannot be stored: {exc.diag.message_primary}",
                                       entry.table.file)], 1)
            return outcome
    _check_references(conn, staged, outcome)
    return outcome


def _add(outcome: ImportOutcome, found: list[Problem], total: int) -> None:
    outcome.errors.extend(found)
    outcome.error_count += total


def stage(conn: psycopg.Connection[Any], source: Source, entry: Entry,
          outcome: ImportOutcome, where: sql.Composable | None = None) -> int | None:
    """COPY the file into a text staging table; its row count, or None when COPY rejects it.
    With `where`, only the rows that satisfy it are kept (and counted)."""
    cols = [sql.Identifier(f"c{i}") for i in range(1, len(entry.header) + 1)]
    # Rows keep file order in the fresh table, so a row's line is its rank by ctid (plus the
    # header); it is computed only for rows that have a problem.
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        entry.stage, sql.SQL(", ").join(sql.SQL('{} text COLLATE "C"').format(c) for c in cols)))
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        entry.stage, sql.SQL(", ").join(cols))
    if where is not None:
        copy_sql = sql.SQL("{} WHERE {}").format(copy_sql, where)
    try:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(copy_sql) as copy, source.open(entry.table.file) as stream:
                for chunk in copy_chunks(stream, COPY_CHUNK):
                    copy.write(chunk)
            return cur.rowcount
    except psycopg.errors.DataError as exc:
        line = _copy_line(exc)
        message = exc.diag.message_primary or str(exc)
        _add(outcome, [Problem(f"cannot read the file: {message}", entry.table.file, line)], 1)
        return None


def _lines(conn: psycopg.Connection[Any], entry: Entry, ctids: list[str]) -> dict[str, int]:
    """File line numbers of staged rows, by ctid."""
    if not ctids:
        return {}
    return {str(c): int(n) for c, n in conn.execute(sql.SQL(
        "SELECT ctid::text, n FROM (SELECT ctid, row_number() OVER (ORDER BY ctid) + 1 AS n "
        "FROM {}) x WHERE ctid = ANY(%s::tid[])").format(entry.stage), (ctids,)).fetchall()}


def _copy_line(exc: psycopg.Error) -> int | None:
    match = re.search(r"line (\d+)", exc.diag.context or "")
    return int(match.group(1)) if match else None


def value_checks(entry: Entry, strict: bool) -> list[tuple[sql.Composable, sql.Composable]]:
    """One `CASE WHEN bad THEN message END` per rule, over the staging columns.

    Dates, date-times and years get a cheap shape check here (LIKE, not a regular
    expression); the typed merge then casts every value, and only when a cast fails are the
    strict checks run (strict=True) to name every offending line."""
    checks: list[tuple[sql.Composable, sql.Composable]] = []
    status = entry.staged(entry.table.column("status"))
    delta = entry.mode == "delta"
    active = (sql.SQL("coalesce({}, '') <> 'tobedeleted'").format(status) if delta
              else sql.SQL("true"))

    def rule(condition: sql.Composable, message: sql.Composable) -> None:
        checks.append((condition, message))

    def shown(col: sql.Identifier) -> sql.Composable:
        return sql.SQL("quote_literal(left({}, 60))").format(col)

    if delta:
        rule(sql.SQL("{0} IS NULL OR {0} NOT IN ('active', 'tobedeleted')").format(status),
             sql.SQL("'status must be ''active'' or ''tobedeleted'' in a delta file, found ' "
                     "|| coalesce({}, 'nothing')").format(shown(status)))
    else:
        rule(sql.SQL("{0} <> '' AND {0} <> 'active'").format(status),
             sql.SQL("'status must be blank in a bulk file, found ' || {}").format(
                 shown(status)))
    for column in entry.table.columns:
        col = entry.staged(column)
        label = sql.Literal(column.name)
        required = column.required or (delta and column.name == "dateLastModified")
        if required:
            rule(sql.SQL("({} IS NULL OR {} = '') AND {}").format(col, col, active),
                 sql.SQL("{} || ' is required'").format(label))
        if column.kind == "enum":
            listed = ", ".join(column.values)
            bad = sql.SQL("{} <> '' AND {} NOT IN ({})").format(
                col, col, sql.SQL(", ").join(sql.Literal(v) for v in column.values))
            if column.extensible:
                # A proprietary term: the prefix and at least one character after it.
                bad = sql.SQL("{} AND {} NOT LIKE {}").format(
                    bad, col, sql.Literal(EXTENSION_PREFIX + "_%"))
                listed += f" (or a proprietary term starting with '{EXTENSION_PREFIX}')"
            rule(bad, sql.SQL("{} || ' ' || {} || ' is not one of: ' || {}").format(
                label, shown(col), sql.Literal(listed)))
        elif column.kind == "bool":
            rule(sql.SQL("{} <> '' AND {} NOT IN ('true', 'false')").format(col, col),
                 sql.SQL("{} || ' ' || {} || ' must be true or false'").format(label,
                                                                               shown(col)))
        elif column.kind in ("date", "datetime"):
            shape = "YYYY-MM-DD" if column.kind == "date" else "an ISO 8601 date-time"
            bad = (sql.SQL("NOT pg_temp.{}({})").format(sql.Identifier(f"is_{column.kind}"), col)
                   if strict else sql.SQL("{} NOT LIKE {}").format(col, sql.Literal(
                       "____-__-__" if column.kind == "date" else "____-__-__%")))
            rule(sql.SQL("{} <> '' AND {}").format(col, bad),
                 sql.SQL("{} || ' ' || {} || {}").format(label, shown(col), sql.Literal(
                     f" is not a valid date (expected {shape})")))
        elif column.kind == "year":
            bad = (sql.SQL("{} !~ '^\\d{{4}}$'") if strict
                   else sql.SQL("{} NOT LIKE '____'")).format(col)
            rule(sql.SQL("{} <> '' AND {}").format(col, bad),
                 sql.SQL("{} || ' ' || {} || ' is not a year (YYYY)'").format(label,
                                                                              shown(col)))
    return checks


def _recheck_strictly(conn: psycopg.Connection[Any], staged: list[Entry],
                      outcome: ImportOutcome) -> None:
    """The epoch fails anyway: replace the cheap value findings with the strict ones, so every
    bad date is named too, not only the badly shaped ones."""
    kept = [p for p in outcome.errors
            if p.message.startswith("cannot read the file") or p.message == EMPTY_BULK]
    outcome.errors, outcome.error_count = [], len(kept)
    duplicates: list[Problem] = []
    for entry in staged:
        _add(outcome, *_check_values(conn, entry, strict=True))
        duplicates += _check_duplicates(conn, entry)
    _add(outcome, duplicates, len(duplicates))
    outcome.errors += kept


def _check_values(conn: psycopg.Connection[Any], entry: Entry,
                  strict: bool) -> tuple[list[Problem], int]:
    checks = value_checks(entry, strict)
    bad, found, total = offending_rows(conn, entry.stage, checks, LISTED_PER_CHECK * 5)
    if not bad:
        return [], 0
    lines = _lines(conn, entry, bad)
    return [Problem(msg, entry.table.file, lines.get(str(ctid))) for ctid, msg in found], total


def _check_duplicates(conn: psycopg.Connection[Any], entry: Entry) -> list[Problem]:
    sid = entry.staged(entry.table.column("sourcedId"))
    dupes = [r[0] for r in conn.execute(sql.SQL(
        "SELECT {0} FROM {1} WHERE {0} <> '' GROUP BY {0} HAVING count(*) > 1 LIMIT {2}")
        .format(sid, entry.stage, sql.Literal(LISTED_PER_CHECK))).fetchall()]
    if not dupes:
        return []
    rows = conn.execute(sql.SQL("SELECT ctid::text, {0} FROM {1} WHERE {0} = ANY(%s)").format(
        sid, entry.stage), (dupes,)).fetchall()
    lines = _lines(conn, entry, [str(r[0]) for r in rows])
    first: dict[str, int] = {}
    found: list[Problem] = []
    for line, value in sorted((lines[str(c)], str(v)) for c, v in rows):
        if value in first:
            found.append(Problem(f"sourcedId '{value}' appears more than once (first on line "
                                 f"{first[value]})", entry.table.file, line))
        first.setdefault(value, line)
    return found


def _converted(entry: Entry, column: Column) -> sql.Composable:
    col = entry.staged(column)
    if column.kind == "bool":
        return sql.SQL("CASE {} WHEN 'true' THEN true WHEN 'false' THEN false END").format(col)
    if column.kind == "list":
        # Elements are trimmed around the commas; the regular expression only when needed.
        return sql.SQL("CASE WHEN {0} LIKE '% %' THEN regexp_split_to_array(btrim({0}), "
                       "'\\s*,\\s*') WHEN {0} <> '' THEN string_to_array({0}, ',') END"
                       ).format(col)
    cast = {"date": "::date", "datetime": "::timestamptz", "year": "::integer"}.get(
        column.kind, "")
    return sql.SQL("NULLIF({}, ''){}").format(col, sql.SQL(cast))


def merge(conn: psycopg.Connection[Any], entry: Entry, count: FileCount) -> None:
    columns = entry.table.columns
    names = sql.SQL(", ").join(sql.Identifier(c.sql_name) for c in columns)
    values = sql.SQL(", ").join(_converted(entry, c) for c in columns)
    if entry.mode == "bulk":
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(entry.target)).fetchone()
        count.deleted = int(row[0]) if row else 0
        # Replace the rows and build the primary key once, after the load: much faster than
        # maintaining it row by row (duplicates were ruled out before).
        key = sql.Identifier(f"{entry.table.sql_name}_pkey")
        conn.execute(sql.SQL("TRUNCATE {}").format(entry.target))
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(entry.target, key))
        cur = conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            entry.target, names, values, entry.stage))
        count.added = cur.rowcount
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (sourced_id)").format(
            entry.target, key))
        return
    status = entry.staged(entry.table.column("status"))
    sid = entry.staged(entry.table.column("sourcedId"))
    cur = conn.execute(sql.SQL(
        "DELETE FROM {} t USING {} s WHERE s.{} = 'tobedeleted' AND t.sourced_id = s.{}")
        .format(entry.target, entry.stage, status, sid))
    count.deleted = cur.rowcount
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c.sql_name))
        for c in columns if c.name != "sourcedId")
    row = conn.execute(sql.SQL(
        "WITH up AS (INSERT INTO {} ({}) SELECT {} FROM {} WHERE {} = 'active' "
        "ON CONFLICT (sourced_id) DO UPDATE SET {} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up")
        .format(entry.target, names, values, entry.stage, status, updates)).fetchone()
    if row:
        count.added, count.changed = int(row[0]), int(row[1])


def _check_references(conn: psycopg.Connection[Any], staged: list[Entry],
                      outcome: ImportOutcome) -> None:
    """After the merge, every reference of a touched table (or into one) must resolve."""
    by_table = {e.table.name: e for e in staged}
    # Tables just loaded have no statistics yet; a nested loop over a million rows would be the
    # planner's guess. Every check is a scan anti-joined to a set of keys: hash it.
    conn.execute("SET LOCAL enable_nestloop = off")
    conn.execute("SET LOCAL enable_mergejoin = off")
    for table, columns in all_tables().items():
        for column in columns:
            if column.ref is None or (table not in by_table and column.ref not in by_table):
                continue
            _check_reference(conn, table, column, by_table.get(table),
                             by_table.get(column.ref), outcome)


def _staged_lines(conn: psycopg.Connection[Any], entry: Entry | None,
                  sourced_ids: list[str]) -> dict[str, int]:
    if entry is None or not sourced_ids:
        return {}
    sid = entry.staged(entry.table.column("sourcedId"))
    rows = conn.execute(sql.SQL("SELECT {0}, ctid::text FROM {1} WHERE {0} = ANY(%s)").format(
        sid, entry.stage), (sourced_ids,)).fetchall()
    lines = _lines(conn, entry, [str(r[1]) for r in rows])
    return {str(s): lines[str(c)] for s, c in rows}


def _check_reference(conn: psycopg.Connection[Any], table: str, column: Column,
                     entry: Entry | None, referenced: Entry | None,
                     outcome: ImportOutcome) -> None:
    assert column.ref is not None
    source = sql.Identifier(SCHEMA, snake(table))
    target = sql.Identifier(SCHEMA, snake(column.ref))
    col = sql.Identifier(column.sql_name)
    value = (sql.SQL("unnest(r.{})").format(col) if column.kind == "list"
             else sql.SQL("r.{}").format(col))
    body = sql.SQL(
        "FROM (SELECT r.sourced_id, {} AS v FROM {} r WHERE r.{} IS NOT NULL) x "
        "WHERE x.v <> '' AND NOT EXISTS (SELECT 1 FROM {} f WHERE f.sourced_id = x.v)").format(
        value, source, col, target)
    bad = conn.execute(sql.SQL("SELECT x.sourced_id, x.v {} ORDER BY 1, 2 LIMIT {}").format(
        body, sql.Literal(LISTED_PER_CHECK))).fetchall()
    if not bad:
        return
    total = len(bad)
    if total == LISTED_PER_CHECK:
        row = conn.execute(sql.SQL("SELECT count(*) {}").format(body)).fetchone()
        total = int(row[0]) if row else total
    lines = _staged_lines(conn, entry, [str(b[0]) for b in bad])
    # A row that is not in this upload breaks because this upload removed what it points at:
    # point at the line that removed it.
    removals = _staged_lines(conn, referenced, [str(b[1]) for b in bad
                                                if str(b[0]) not in lines])
    found: list[Problem] = []
    for sourced_id, v in bad:
        if sourced_id in lines:
            found.append(Problem(f"{column.name} '{v}' does not match the sourcedId of any "
                                 f"{column.ref} row", f"{table}.csv", lines[sourced_id]))
        else:
            found.append(Problem(f"{table} '{sourced_id}' (already in the database) refers to "
                                 f"{column.name} '{v}', which is no longer in {column.ref}",
                                 f"{column.ref}.csv", removals.get(str(v))))
    found.sort(key=lambda p: (p.file or "", p.line or 0))
    _add(outcome, found, total)
