"""Generic CSV API in PostgreSQL: the district's tables, COPY into staging, set-based value
checks worded with file, line and column, and the merges the guide's load rules ask for."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from sftpd.formats import FileCount, ImportOutcome, Problem
from sftpd.formats.copying import copy_chunks
from sftpd.formats.generic_csv.spec import (
    ABSENCES,
    DATE_FORMS,
    ENROLLMENTS,
    FLAGS,
    GENDERS,
    GUARDIANS,
    LANGUAGES,
    PERMISSIONS,
    STUDENT_ID_LENGTH,
    STUDENTS,
    USER_ROLES,
    USERS,
    Column,
    FileSpec,
)
from sftpd.formats.staged import offending_rows

SCHEMA = "generic_csv"
TEMP_BUFFERS = "256MB"
WORK_MEM = "256MB"
COPY_CHUNK = 1 << 20
# How many problems of one check are listed; all are counted.
LISTED_PER_CHECK = 200
_YES = ("Y", "y", "Yes", "yes", "true", "TRUE")

# Gender and Language are stored as written and, generated from that, normalized (M/F, lower
# case): COPY cannot transform a value, and the first load COPYs straight into the tables.
_DDL = """
CREATE SCHEMA IF NOT EXISTS generic_csv;
CREATE TABLE IF NOT EXISTS generic_csv.students (
  student_id text COLLATE "C" PRIMARY KEY, last_name text NOT NULL, middle_name text,
  first_name text NOT NULL, date_of_birth date NOT NULL, gender_as_written text NOT NULL,
  gender text GENERATED ALWAYS AS (upper(left(gender_as_written, 1))) STORED,
  district_enrollment text NOT NULL, grade text, address text, city text, state text,
  zip text, race text, district_of_residence text, county_of_residence text,
  district_of_service text, student_reporting_id text, building text NOT NULL,
  building_reporting_id text NOT NULL, sis_internal_id text);
CREATE TABLE IF NOT EXISTS generic_csv.guardians (
  student_id text COLLATE "C" NOT NULL, last_name text NOT NULL, first_name text NOT NULL,
  relationship text, email text, phone text, address text, city text, state text, zip text,
  language_as_written text,
  language text GENERATED ALWAYS AS (lower(language_as_written)) STORED);
CREATE INDEX IF NOT EXISTS guardians_student_id ON generic_csv.guardians (student_id);
-- Tables of the release before the first-load path held gender and language normalized, with
-- no column as written: that value becomes the column as written (the normalized value is its
-- own normalization), and the normalized one is generated from it as for new tables.
DO $upgrade$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'generic_csv.students'::regclass
                 AND attname = 'gender_as_written' AND NOT attisdropped) THEN
    ALTER TABLE generic_csv.students RENAME COLUMN gender TO gender_as_written;
    ALTER TABLE generic_csv.students ADD COLUMN gender text
      GENERATED ALWAYS AS (upper(left(gender_as_written, 1))) STORED;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'generic_csv.guardians'::regclass
                 AND attname = 'language_as_written' AND NOT attisdropped) THEN
    ALTER TABLE generic_csv.guardians RENAME COLUMN language TO language_as_written;
    ALTER TABLE generic_csv.guardians ADD COLUMN language text
      GENERATED ALWAYS AS (lower(language_as_written)) STORED;
  END IF;
END $upgrade$;
CREATE TABLE IF NOT EXISTS generic_csv.users (
  email text COLLATE "C" PRIMARY KEY, last_name text NOT NULL, first_name text NOT NULL);
CREATE TABLE IF NOT EXISTS generic_csv.user_role_assignments (
  email text COLLATE "C" NOT NULL REFERENCES generic_csv.users ON DELETE CASCADE,
  position integer NOT NULL, role text NOT NULL, buildings text[] NOT NULL,
  PRIMARY KEY (email, position));
CREATE TABLE IF NOT EXISTS generic_csv.role_permissions (
  role text COLLATE "C" NOT NULL, form text COLLATE "C" NOT NULL,
  default_permission text NOT NULL, max_permission text NOT NULL,
  PRIMARY KEY (role, form));
CREATE TABLE IF NOT EXISTS generic_csv.absences (
  student_id text COLLATE "C" NOT NULL, absence_date date NOT NULL,
  PRIMARY KEY (student_id, absence_date));
"""

# Run only when a value fails to convert (the epoch fails anyway): names the real dates.
_STRICT_HELPERS = r"""
CREATE OR REPLACE FUNCTION pg_temp.gc_real_date(x text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN x ~ '^\d{4}([-/])\d\d\1\d\d$' THEN pg_temp.gc_ymd(substr(x, 1, 4)::int,
                                                       substr(x, 6, 2)::int, substr(x, 9, 2)::int)
    WHEN x ~ '^\d\d([-/])\d\d\1\d{4}$' THEN pg_temp.gc_ymd(substr(x, 7, 4)::int,
                                                       substr(x, 1, 2)::int, substr(x, 4, 2)::int)
    ELSE false END
$$;
"""
_YMD = r"""
CREATE OR REPLACE FUNCTION pg_temp.gc_ymd(y int, m int, d int) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT y >= 1 AND m BETWEEN 1 AND 12 AND d >= 1
     AND d <= extract(day from make_date(y, m, 1) + interval '1 month - 1 day')
$$;
"""


@dataclass(frozen=True)
class Entry:
    """One file of the epoch to load: its spec and where it is."""

    spec: FileSpec
    path: Path

    @property
    def stage(self) -> sql.Identifier:
        return sql.Identifier("pg_temp", f"gc_{self.spec.name}")

    def col(self, name: str) -> sql.Identifier:
        """The staging column holding a spec column (headers are exact, so by position)."""
        return sql.Identifier(f"c{[c.name for c in self.spec.columns].index(name) + 1}")


def prepare(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_DDL)
    # Staging lives in temporary tables (no WAL): let a million rows of them stay in memory.
    # temp_buffers is per session and only takes effect before the session's first one.
    conn.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
    conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    conn.execute(f"SET LOCAL maintenance_work_mem = '{WORK_MEM}'")
    conn.execute("SET LOCAL timezone = 'UTC'")


def stage(conn: psycopg.Connection[Any], entry: Entry, outcome: ImportOutcome,
          where: sql.Composable | None = None) -> int | None:
    """COPY the file into a text staging table; its row count, or None when COPY refuses it
    (the problem is added to the outcome). With `where`, only the rows that satisfy it are
    kept (and counted)."""
    cols = [sql.Identifier(f"c{i}") for i in range(1, len(entry.spec.columns) + 1)]
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
        entry.stage, sql.SQL(", ").join(sql.SQL('{} text COLLATE "C"').format(c) for c in cols)))
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        entry.stage, sql.SQL(", ").join(cols))
    if where is not None:
        copy_sql = sql.SQL("{} WHERE {}").format(copy_sql, where)
    try:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(copy_sql) as copy, entry.path.open("rb") as stream:
                for chunk in copy_chunks(stream, COPY_CHUNK):
                    copy.write(chunk)
            return cur.rowcount
    except psycopg.errors.DataError as exc:
        match = re.search(r"line (\d+)", exc.diag.context or "")
        line = int(match.group(1)) if match else None
        message = exc.diag.message_primary or str(exc)
        if "unterminated CSV quoted field" in message:
            # COPY names the end of the file; the person needs where the quote opened.
            line, column = quote_opened(entry.path, entry.spec)
            message += (f": the quote opens in column '{column}' and is never closed"
                        if column else ": a quote opens on this line and is never closed")
        outcome.errors.append(Problem(f"cannot read the file as RFC 4180 CSV: {message}",
                                      entry.spec.file, line))
        outcome.error_count += 1
        return None


def quote_opened(path: Path, spec: FileSpec) -> tuple[int | None, str | None]:
    """Where the record that never ends starts (its line), and the column whose opening
    quote is never closed when that is on the same line."""
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(text, strict=True)
        end = 0
        try:
            for _ in reader:
                end = reader.line_num
        except csv.Error:
            pass
    start = end + 1
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        first = next((t for n, t in enumerate(text, start=1) if n == start), "")
    field, quoted, at_start, opened, i = 0, False, True, None, 0
    while i < len(first):
        ch = first[i]
        if quoted and ch == '"':
            if first[i + 1:i + 2] == '"':
                i += 1  # a doubled quote is a quote inside the field
            else:
                quoted, opened = False, None
        elif not quoted and ch == '"' and at_start:
            quoted, opened = True, field
        elif not quoted and ch == ",":
            field += 1
        at_start = ch == "," and not quoted
        i += 1
    names = [c.name for c in spec.columns]
    column = names[opened] if opened is not None and opened < len(names) else None
    return start, column


@dataclass(frozen=True)
class Check:
    """A rule on one column: rows where `bad` holds get `message` (SQL text expressions)."""

    column: str
    bad: sql.Composable
    message: sql.Composable


def _shown(col: sql.Identifier) -> sql.Composable:
    return sql.SQL("quote_literal(left({}, 60))").format(col)


def _one_of(col: sql.Identifier, values: Collection[str],
            expr: sql.Composable | None = None) -> sql.Composable:
    return sql.SQL("{} <> '' AND {} NOT IN ({})").format(
        col, expr or col, sql.SQL(", ").join(sql.Literal(v) for v in sorted(values)))


def _date_shape(col: sql.Identifier) -> sql.Composable:
    """True for ten characters in one of the four forms (digits and one kind of separator in
    the right places); whether it is a real date is left to make_date (or the date type)."""
    # (in coalesce: `NOT` of a bare `IN` list is rewritten into a negated list that COPY ...
    # WHERE, where the first load checks it, cannot run: "cache lookup failed for function 0")
    return sql.SQL(
        "coalesce(length({0}) = 10 AND translate({0}, '0123456789', '') IN ('--', '//') AND "
        "(substr({0}, 5, 1) = substr({0}, 8, 1) OR substr({0}, 3, 1) = substr({0}, 6, 1)), "
        "false)").format(col)


def date_value(col: sql.Identifier) -> sql.Composable:
    """The date of a value of the right shape (make_date refuses a day that does not exist)."""
    return sql.SQL(
        "CASE WHEN {0} = '' THEN NULL WHEN substr({0}, 5, 1) IN ('-', '/') THEN make_date("
        "substr({0}, 1, 4)::int, substr({0}, 6, 2)::int, substr({0}, 9, 2)::int) ELSE make_date("
        "substr({0}, 7, 4)::int, substr({0}, 1, 2)::int, substr({0}, 4, 2)::int) END").format(col)


def checks(entry: Entry, strict: bool) -> list[Check]:
    """Every value rule of the file; dates get their shape checked, or (strict) their
    calendar too (run only when a conversion failed)."""
    found: list[Check] = []
    deleted = (sql.SQL("coalesce({}, '') IN ({})").format(
        entry.col("Deleted"), sql.SQL(", ").join(sql.Literal(v) for v in _YES))
        if entry.spec is USERS else sql.SQL("false"))

    def rule(column: Column, bad: sql.Composable, message: sql.Composable) -> None:
        found.append(Check(column.name, bad, message))

    for column in entry.spec.columns:
        col = entry.col(column.name)
        if column.required:
            exempt = deleted if column.kind != "email" else sql.SQL("false")
            # Blank: no value, or only spaces. (Only a value sorting before '!' in "C" order
            # can be all spaces: the costly btrim runs for those alone, and a value with one
            # costs a comparison; btrim on every row made this rule 3x dearer.)
            rule(column, sql.SQL("({0} IS NULL OR ({0} < '!' AND btrim({0}) = '')) AND NOT ({1})")
                 .format(col, exempt), sql.SQL("'a value is required'"))
        if column.kind == "id":
            rule(column, sql.SQL("length({}) > {}").format(col, sql.Literal(STUDENT_ID_LENGTH)),
                 sql.SQL("{} || ' is ' || length({}) || ' characters long; at most {} are "
                         "allowed'").format(_shown(col), col, sql.SQL(str(STUDENT_ID_LENGTH))))
            # (a regular expression: translate() with 62 letters costs several times more)
            rule(column, sql.SQL("{} ~ '[^A-Za-z0-9]'").format(col),
                 sql.SQL("{} || ' may hold only letters and digits'").format(_shown(col)))
        elif column.kind == "date":
            bad: sql.Composable = sql.SQL("NOT ({})").format(_date_shape(col))
            if strict:
                bad = sql.SQL("NOT coalesce(pg_temp.gc_real_date({}), false)").format(col)
            rule(column, sql.SQL("{} <> '' AND {}").format(col, bad),
                 sql.SQL("{} || ' is not a date in one of the forms ' || {}").format(
                     _shown(col), sql.Literal(DATE_FORMS + " (a real day of the calendar)")))
        elif column.kind in ("gender", "enrollment", "permission", "flag", "language"):
            values, expr, listed = {
                "gender": (GENDERS, None, ", ".join(GENDERS)),
                "enrollment": (ENROLLMENTS, None, ", ".join(ENROLLMENTS)),
                "permission": (PERMISSIONS, None, ", ".join(PERMISSIONS) + " (lower case)"),
                "flag": (FLAGS, None, "Y or N (also yes/no, true/false)"),
                "language": (LANGUAGES, sql.SQL("lower({})").format(col),
                             "a two-letter ISO 639-1 code such as en or es"),
            }[column.kind]
            bad = _one_of(col, values, expr)
            if column.kind == "language":
                # (a jsonb object's keys, searched by halves: COPY ... WHERE, where the first
                # load checks it, does not hash a long IN list and would compare each of the
                # 184 codes in turn; an alternation of them as a regular expression costs 5x)
                bad = sql.SQL("{} <> '' AND NOT ({}::jsonb ? lower({}))").format(
                    col, sql.Literal(json.dumps(dict.fromkeys(sorted(values), 0))), col)
            rule(column, bad,
                 sql.SQL("{} || ' is not one of: ' || {}").format(_shown(col),
                                                                 sql.Literal(listed)))
        elif column.kind == "email":
            rule(column, sql.SQL("{} <> '' AND {} NOT LIKE '_%@_%'").format(col, col),
                 sql.SQL("{} || ' is not an email address'").format(_shown(col)))
    if entry.spec is USER_ROLES:
        default, top = entry.col("Default"), entry.col("Max")
        order = sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(sql.Literal(p)
                                                                for p in PERMISSIONS))
        rule(USER_ROLES.column("Max"), sql.SQL(
            "array_position({0}, {1}::text) < array_position({0}, {2}::text)").format(
            order, top, default),
            sql.SQL("{} || ' is below the default permission ' || {} || ' (none < view < edit "
                    "< owner)'").format(_shown(top), _shown(default)))
    if entry.spec is USERS:
        roles, buildings = entry.col("Roles"), entry.col("Buildings")
        rule(USERS.column("Roles"), sql.SQL(
            "{0} LIKE ';%' OR {0} LIKE '%;' OR {0} LIKE '%;;%' OR {0} ~ '^\\s|\\s$|\\s;|;\\s'"
        ).format(roles), sql.SQL("{} || ' has an empty role or spaces around a '';'' (roles "
                                 "are separated by '';'')'").format(_shown(roles)))
        rule(USERS.column("Buildings"), sql.SQL(
            "coalesce({0}, '') <> '' AND cardinality(string_to_array({0}, ';')) <> "
            "cardinality(string_to_array(coalesce({1}, ''), ';'))").format(buildings, roles),
            sql.SQL("'has ' || cardinality(string_to_array({}, ';')) || ' building list(s) for ' "
                    "|| coalesce(cardinality(string_to_array({}, ';')), 0) || ' role(s): one "
                    "list per role, '';'' between roles and '','' between one role''s "
                    "buildings'").format(buildings, roles))
    return found


def find_problems(conn: psycopg.Connection[Any], entry: Entry,
                  strict: bool) -> tuple[list[Problem], int]:
    """Every row that breaks a rule, worded with file, line and column."""
    rules = checks(entry, strict)
    if not rules:
        return [], 0
    bad, found, total = offending_rows(
        conn, entry.stage, [(r.bad, sql.SQL("{} || ': ' || {}").format(
            sql.Literal(f"column '{r.column}'"), r.message)) for r in rules],
        LISTED_PER_CHECK * 5)
    if not bad:
        return [], 0
    lines = file_lines(conn, entry, bad)
    return [Problem(str(msg), entry.spec.file, lines.get(str(ctid))) for ctid, msg in found], total


def file_lines(conn: psycopg.Connection[Any], entry: Entry, ctids: list[str],
               table: sql.Composable | None = None) -> dict[str, int]:
    """The line of the file each staged row starts on (rows keep file order in the fresh
    staging table, or in the table a first load COPYs the file into; a quoted field may span
    lines, so the file itself is read to count)."""
    if not ctids:
        return {}
    records = {str(c): int(n) for c, n in conn.execute(sql.SQL(
        "SELECT ctid::text, n FROM (SELECT ctid, row_number() OVER (ORDER BY ctid) AS n "
        "FROM {}) x WHERE ctid = ANY(%s::tid[])").format(table or entry.stage),
        (ctids,)).fetchall()}
    starts = record_lines(entry.path, set(records.values()))
    return {c: starts.get(n, n + 1) for c, n in records.items()}


def record_lines(path: Path, records: set[int]) -> dict[int, int]:
    """The line each wanted data record (1 = the first after the header) starts on."""
    found: dict[int, int] = {}
    if not records:
        return found
    last = max(records)
    with path.open("rb") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace",
                                             newline=""))
        try:
            next(reader, None)
            end = reader.line_num
            for number, _ in enumerate(reader, start=1):
                if number in records:
                    found[number] = end + 1
                end = reader.line_num
                if number >= last:
                    break
        except csv.Error:
            pass  # COPY read it; from here on the record counts stand in for the lines
    return found


def duplicates(conn: psycopg.Connection[Any], entry: Entry, key: list[str],
               label: str) -> list[Problem]:
    """Rows repeating a key of an earlier row of the file."""
    cols = sql.SQL(", ").join(_key_expr(entry, k) for k in key)
    rows = conn.execute(sql.SQL(
        "SELECT at, first FROM (SELECT ctid::text AS at, ctid, first_value(ctid::text) OVER "
        "(PARTITION BY {0} ORDER BY ctid) AS first FROM {1} WHERE {2}) x WHERE at <> first "
        "ORDER BY ctid LIMIT {3}").format(
            cols, entry.stage, sql.SQL(" AND ").join(
                sql.SQL("coalesce({}, '') <> ''").format(entry.col(k)) for k in key),
            sql.Literal(LISTED_PER_CHECK))).fetchall()
    lines = file_lines(conn, entry, [str(r[0]) for r in rows] + [str(r[1]) for r in rows])
    return [Problem(f"column '{key[0]}': {label} is already on line {lines.get(str(f))}",
                    entry.spec.file, lines.get(str(a))) for a, f in rows]


def repeats_key(conn: psycopg.Connection[Any], entry: Entry, key: list[str]) -> bool:
    """Whether some key is on two rows (one hashed pass; duplicates() then words them)."""
    cols = sql.SQL(", ").join(_key_expr(entry, k) for k in key)
    return conn.execute(sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {} GROUP BY {} HAVING count(*) > 1)").format(
        entry.stage, cols)).fetchone() == (True,)


def students_empty(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM generic_csv.students)").fetchone() == (True,)


def _key_expr(entry: Entry, name: str) -> sql.Composable:
    col = entry.col(name)
    return sql.SQL("lower({})").format(col) if name == "Email" else col


@dataclass
class Loaded:
    """The staged files of an import, by file name."""

    entries: dict[str, Entry]
    counts: dict[str, FileCount]


def merge_all(conn: psycopg.Connection[Any], loaded: Loaded, outcome: ImportOutcome) -> None:
    """Apply the load rules, file by file (students first)."""
    students = loaded.entries.get(STUDENTS.file)
    if students is not None:
        _merge_students(conn, students, loaded.counts[STUDENTS.file])
    guardians = loaded.entries.get(GUARDIANS.file)
    if guardians is not None:
        _merge_guardians(conn, guardians, students, loaded.counts[GUARDIANS.file], outcome)
    users = loaded.entries.get(USERS.file)
    if users is not None:
        _merge_users(conn, users, loaded.counts[USERS.file], outcome)
    roles = loaded.entries.get(USER_ROLES.file)
    if roles is not None:
        _merge_user_roles(conn, roles, loaded.counts[USER_ROLES.file])
    absences = loaded.entries.get(ABSENCES.file)
    if absences is not None:
        _merge_absences(conn, absences, loaded.counts[ABSENCES.file], outcome)


def stored_name(column: Column) -> str:
    """The table column that takes the file column's value (as written, where a normalized
    copy is generated from it)."""
    if column.kind in ("gender", "language"):
        return f"{column.sql_name}_as_written"
    return column.sql_name


def _value(entry: Entry, column: Column) -> sql.Composable:
    col = entry.col(column.name)
    if column.kind == "date":
        return date_value(col)
    return sql.SQL("NULLIF({}, '')").format(col)


def _merge_students(conn: psycopg.Connection[Any], entry: Entry, count: FileCount) -> None:
    names = [stored_name(c) for c in STUDENTS.columns]
    cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    values = sql.SQL(", ").join(_value(entry, c) for c in STUDENTS.columns)
    target = sql.Identifier(SCHEMA, "students")
    if students_empty(conn):
        # The first load: build the key once after the rows instead of row by row (a repeated
        # Student Id fails the key build, and is then found and worded).
        conn.execute("ALTER TABLE generic_csv.students DROP CONSTRAINT students_pkey")
        cur = conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            target, cols, values, entry.stage))
        count.added = cur.rowcount
        conn.execute("ALTER TABLE generic_csv.students ADD CONSTRAINT students_pkey "
                     "PRIMARY KEY (student_id)")
        return
    others = [n for n in names if n != "student_id"]
    row = conn.execute(sql.SQL(
        "WITH up AS (INSERT INTO {0} AS t ({1}) SELECT {2} FROM {3} ON CONFLICT (student_id) "
        "DO UPDATE SET {4} WHERE ({5}) IS DISTINCT FROM ({6}) RETURNING (xmax = 0) AS added) "
        "SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added) FROM up"
    ).format(target, cols, values, entry.stage,
             sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
                                for n in others),
             sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(n)) for n in others),
             sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(n))
                                for n in others))).fetchone()
    if row:
        count.added, count.changed = int(row[0]), int(row[1])


def _merge_guardians(conn: psycopg.Connection[Any], entry: Entry, students: Entry | None,
                     count: FileCount, outcome: ImportOutcome) -> None:
    """Guardians replace the guardians of every student of the load; rows for a student not
    in the load are skipped (with a warning each)."""
    sid = entry.col("Student Id")
    if students is None:
        if count.rows:
            outcome.warnings.append(Problem(
                f"guardians are loaded only together with students.csv; all {count.rows} "
                "rows were skipped", GUARDIANS.file))
        return
    empty = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM generic_csv.guardians)").fetchone() == (True,)
    if not empty:
        cur = conn.execute(sql.SQL(
            "DELETE FROM generic_csv.guardians g USING {} s WHERE g.student_id = s.c1").format(
            students.stage))
        count.deleted = cur.rowcount
    else:
        # The first load: build the index once after the rows, not row by row.
        conn.execute("DROP INDEX generic_csv.guardians_student_id")
    cols = sql.SQL(", ").join(sql.Identifier(stored_name(c)) for c in GUARDIANS.columns)
    values = sql.SQL(", ").join(_value(entry, c) for c in GUARDIANS.columns)
    # (in file order: a seq scan of the fresh staging table reads it that way)
    cur = conn.execute(sql.SQL(
        "INSERT INTO generic_csv.guardians ({}) SELECT {} FROM {} g WHERE EXISTS "
        "(SELECT 1 FROM {} s WHERE s.c1 = g.{})").format(
        cols, values, entry.stage, students.stage, sid))
    count.added = cur.rowcount
    if empty:
        conn.execute("CREATE INDEX guardians_student_id ON generic_csv.guardians (student_id)")
    if count.added < count.rows:  # (only then is it worth a scan to name the skipped rows)
        _warn_skipped(conn, entry, students, count.rows - count.added, outcome)


def _warn_skipped(conn: psycopg.Connection[Any], entry: Entry, students: Entry, total: int,
                  outcome: ImportOutcome) -> None:
    sid = entry.col("Student Id")
    skipped = [str(r[0]) for r in conn.execute(sql.SQL(
        "SELECT g.ctid::text FROM {} g WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE s.c1 = g.{}) "
        "ORDER BY g.ctid LIMIT {}").format(entry.stage, students.stage, sid,
                                           sql.Literal(LISTED_PER_CHECK))).fetchall()]
    outcome.warnings.extend(skipped_guardians(skipped, file_lines(conn, entry, skipped), total))


def skipped_guardians(ctids: list[str], lines: dict[str, int], total: int) -> list[Problem]:
    """The warnings for guardian rows skipped because their student is not in the load: the
    first rows by line, then how many more."""
    found = [Problem(
        "column 'Student Id': the student is not in this load's students.csv; row skipped",
        GUARDIANS.file, lines.get(ctid)) for ctid in ctids]
    if total > len(ctids):
        found.append(Problem(
            f"... {total - len(ctids)} more guardian rows skipped the same way", GUARDIANS.file))
    return found


def _merge_users(conn: psycopg.Connection[Any], entry: Entry, count: FileCount,
                 outcome: ImportOutcome) -> None:
    email = sql.SQL("lower(s.{})").format(entry.col("Email"))
    deleted = sql.SQL("coalesce(s.{}, '') IN ({})").format(
        entry.col("Deleted"), sql.SQL(", ").join(sql.Literal(v) for v in _YES))
    gone = conn.execute(sql.SQL(
        "SELECT s.ctid::text FROM {} s WHERE {} AND NOT EXISTS (SELECT 1 FROM generic_csv.users "
        "u WHERE u.email = {}) ORDER BY s.ctid LIMIT {}").format(
        entry.stage, deleted, email, sql.Literal(LISTED_PER_CHECK))).fetchall()
    lines = file_lines(conn, entry, [str(r[0]) for r in gone])
    for (ctid,) in gone:
        outcome.warnings.append(Problem("column 'Deleted': no such user; nothing to delete",
                                        USERS.file, lines.get(str(ctid))))
    cur = conn.execute(sql.SQL(
        "DELETE FROM generic_csv.users u USING {} s WHERE {} AND u.email = {}").format(
        entry.stage, deleted, email))
    count.deleted = cur.rowcount
    last, first = entry.col("Last Name"), entry.col("First Name")
    row = conn.execute(sql.SQL(
        "WITH up AS (INSERT INTO generic_csv.users AS t (email, last_name, first_name) "
        "SELECT {0}, s.{1}, s.{2} FROM {3} s WHERE NOT {4} ON CONFLICT (email) DO UPDATE SET "
        "last_name = EXCLUDED.last_name, first_name = EXCLUDED.first_name WHERE "
        "(t.last_name, t.first_name) IS DISTINCT FROM (EXCLUDED.last_name, EXCLUDED.first_name) "
        "RETURNING (xmax = 0) AS added) "
        "SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added) FROM up"
    ).format(email, last, first, entry.stage, deleted)).fetchone()
    if row:
        count.added, count.changed = int(row[0]), int(row[1])
    # Each user of the load gets exactly the roles of the load, in order, each role with
    # its own buildings (';' between roles, ',' between one role's buildings).
    conn.execute(sql.SQL(
        "DELETE FROM generic_csv.user_role_assignments a USING {} s WHERE NOT {} AND "
        "a.email = {}").format(entry.stage, deleted, email))
    conn.execute(sql.SQL(
        "INSERT INTO generic_csv.user_role_assignments (email, position, role, buildings) "
        "SELECT {0}, r.n, r.role, coalesce((SELECT array_agg(btrim(b) ORDER BY i) FROM "
        "unnest(string_to_array((string_to_array(s.{1}, ';'))[r.n], ',')) WITH ORDINALITY "
        "AS x(b, i) WHERE btrim(b) <> ''), '{{}}') FROM {2} s CROSS JOIN LATERAL "
        "unnest(string_to_array(s.{3}, ';')) WITH ORDINALITY AS r(role, n) "
        "WHERE NOT {4} AND coalesce(s.{3}, '') <> ''").format(
        email, entry.col("Buildings"), entry.stage, entry.col("Roles"), deleted))


def _merge_user_roles(conn: psycopg.Connection[Any], entry: Entry, count: FileCount) -> None:
    row = conn.execute(sql.SQL(
        "WITH up AS (INSERT INTO generic_csv.role_permissions AS t (role, form, "
        "default_permission, max_permission) SELECT {}, {}, {}, {} FROM {} ON CONFLICT "
        "(role, form) DO UPDATE SET default_permission = EXCLUDED.default_permission, "
        "max_permission = EXCLUDED.max_permission WHERE (t.default_permission, "
        "t.max_permission) IS DISTINCT FROM (EXCLUDED.default_permission, "
        "EXCLUDED.max_permission) RETURNING (xmax = 0) AS added) "
        "SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added) FROM up"
    ).format(*(entry.col(c) for c in ("Role", "Form", "Default", "Max")),
             entry.stage)).fetchone()
    if row:
        count.added, count.changed = int(row[0]), int(row[1])


def _merge_absences(conn: psycopg.Connection[Any], entry: Entry, count: FileCount,
                    outcome: ImportOutcome) -> None:
    sid = entry.col("Student Id")
    unknown = conn.execute(sql.SQL(
        "SELECT a.ctid::text, a.{0} FROM {1} a WHERE NOT EXISTS (SELECT 1 FROM "
        "generic_csv.students s WHERE s.student_id = a.{0}) ORDER BY a.ctid LIMIT {2}").format(
        sid, entry.stage, sql.Literal(LISTED_PER_CHECK))).fetchall()
    if unknown:
        lines = file_lines(conn, entry, [str(r[0]) for r in unknown])
        outcome.errors.extend(Problem(
            f"column 'Student Id': no student '{v}' (neither in this load nor loaded before)",
            ABSENCES.file, lines.get(str(c))) for c, v in unknown)
        outcome.error_count += len(unknown)
        return
    cur = conn.execute(sql.SQL(
        "INSERT INTO generic_csv.absences (student_id, absence_date) SELECT {}, {} FROM {} "
        "ON CONFLICT DO NOTHING").format(sid, date_value(entry.col("Date")), entry.stage))
    count.added = cur.rowcount


def strict_helpers(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_YMD)
    conn.execute(_STRICT_HELPERS)
