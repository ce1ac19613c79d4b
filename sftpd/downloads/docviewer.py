"""`sftpd docviewer`: tonight's documents.csv, published as a complete docviewer epoch."""

from __future__ import annotations

import argparse
import time
from binascii import unhexlify
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import itemgetter
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from district_contract import commands
from district_contract.results import DocviewerResult, Outcome
from psycopg.abc import Buffer

from sftpd import options, tree
from sftpd.downloads import jobrun, publish
from sftpd.downloads.contract import DOCUMENTS, STUDENTS, ensure_contract
from sftpd.downloads.copyrows import binary_values
from sftpd.downloads.jobrun import ExportError
from sftpd.downloads.tokens import (
    TOKEN_CHARS,
    TokenIssuer,
    TokenKeyError,
    aware_time,
    parse_duration,
    pieces,
    read_keys,
)
from sftpd.epochs.checkpoints import checkpoint
from sftpd.events import emit, utc_iso
from sftpd.options import UsageError

CSV_NAME = "documents.csv"
HEADER = b"Student Id,Form,Start Date,End Date,URL\r\n"
DEFAULT_KEEP = 7
DEFAULT_TTL = "7d"
MAX_FORMS = 200
MAX_FORM_CHARS = 200
TOKEN_KEY_INVALID = "TokenKeyInvalid"  # noqa: S105 (a result reason)
BATCH_ROWS = 1000  # rows whose tokens are made and written together (about 150 KB)
STUDENTS_PER_READ = 100  # COPY messages (a student's documents each) taken from libpq at once
ID_HEX = 16
HEX_ID = itemgetter(slice(0, ID_HEX))  # of an export line: its id
CSV_COLUMNS = itemgetter(slice(ID_HEX + 1, None))  # of an export line: its four CSV columns
LINE_SEPARATOR = b"\x00"  # text cannot hold a NUL, so no line can


def csv_cell(column: str) -> str:
    """SQL for a text column (never NULL) as a CSV cell, exactly as COPY (FORMAT csv) with its
    default options writes a column of several (copyto.c): in quotes, each quote doubled,
    when it is empty or holds a comma, a quote, a CR or a LF; as it is otherwise."""
    plain = " + ".join(f"strpos({column}, {char})" for char in ("','", "'\"'", "E'\\n'",
                                                                   "E'\\r'"))
    return (f"CASE WHEN {column} <> '' AND {plain} = 0 THEN {column}"
            f" ELSE '\"' || replace({column}, '\"', '\"\"') || '\"' END")


# The documents the export lists: complete, not deleted, of a chosen form, active today, of a
# student who is not deleted; in the file's order. An id is needed for a token: a documents
# view yielding a NULL one lists that document nowhere (a table's id is its primary key).
CHOSEN = """
    FROM documents.documents AS d
    WHERE d.complete AND NOT d.deleted AND d.id IS NOT NULL
      AND d.form = ANY(%(forms)s)
      AND d.start_date <= %(today)s AND d.end_date >= %(today)s
      AND EXISTS (SELECT 1 FROM documents.students AS s
                  WHERE s.student_id = d.student_id AND NOT s.deleted)
    ORDER BY d.student_id, d.form, d.start_date, d.id"""
# The same rows as a plain COPY, one message a row: what the export's lines must equal (the
# tests) and the raw COPY the export is measured against (bench/docviewer_vs_copy.py).
ROWS_QUERY = f"""
COPY (SELECT d.id, d.student_id, d.form, d.start_date::date, d.end_date::date {CHOSEN}
) TO STDOUT (FORMAT csv)
"""
# The export's query: one line a document, `<id as 16 hex digits>,<its four CSV cells>`, the
# cells quoted as COPY quotes them and the dates in the ISO style (set by the job), made by
# the server below its sort (by both processes of a parallel sort); and one COPY message a
# student, holding that student's lines joined by NUL, so the client reads some 20,000
# messages rather than 200,000 (a message costs it about as much as a token). The id's hex
# is the id's 8 bytes as int8send sends them (big-endian two's complement), so any bigint.
# The lines keep the subquery's order: up to PostgreSQL 15 string_agg has no combine
# function, so the aggregate is never split between parallel workers and takes its rows in
# the order they come; from 16 on, where it can be split, the aggregate says its ORDER BY,
# which the sort below already satisfies (presorted aggregates), at no cost.
LINE = (f"encode(int8send(d.id), 'hex') || ',' || {csv_cell('d.student_id')} || ','"
        f" || {csv_cell('d.form')} || ',' || d.start_date::date::text"
        " || ',' || d.end_date::date::text")
EXPORT_QUERY = f"""
COPY (
    SELECT string_agg(textsend(r.line), decode('00', 'hex'){{order}})
    FROM (SELECT d.student_id, d.form, d.start_date, d.id, {LINE} AS line {CHOSEN}) AS r
    GROUP BY r.student_id
    ORDER BY r.student_id
) TO STDOUT (FORMAT binary)
"""  # noqa: S608 (made of this module's constants only)
AGGREGATE_ORDER = " ORDER BY r.form, r.start_date, r.id"
PRESORTED_AGGREGATES = 160000  # server_version_num of PostgreSQL 16


def export_query(server_version: int) -> str:
    """The export's query for a server of this server_version_num."""
    return EXPORT_QUERY.format(
        order=AGGREGATE_ORDER if server_version >= PRESORTED_AGGREGATES else "")


def parse_forms(text: str) -> tuple[str, ...]:
    """The form names of --forms, separated by commas only (a form name may hold spaces)."""
    forms = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    if not forms:
        raise ValueError("--forms names no form: choose at least one")
    if len(forms) > MAX_FORMS or any(len(f) > MAX_FORM_CHARS for f in forms):
        raise ValueError(f"--forms: at most {MAX_FORMS} forms of at most {MAX_FORM_CHARS} "
                         "characters each")
    return forms


def url_cell(base_url: str) -> tuple[bytes, bytes]:
    """The CSV bytes before and after each token in the URL column."""
    parts = urlsplit(base_url)
    if (parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment
            or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in base_url)):
        raise ValueError(f"--base-url {base_url!r} must be an http(s) URL with a host, no "
                         "fragment and no whitespace")
    joined = base_url + ("&" if parts.query else "?") + "token="
    if any(ch in joined for ch in ',"'):
        return b'"' + joined.replace('"', '""').encode(), b'"'
    return joined.encode(), b""


def base_url(text: str) -> str:
    url_cell(text)
    return text


def time_zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(f"unknown time zone {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt = options.prepare(parser)
    opt.path(commands.ROOT, "the district's volume", required=True)
    opt.database_url()
    opt.custom(commands.FORMS, "the form types to export, separated by commas (form names may "
               "hold spaces)", parse_forms, required=True, metavar="FORMS")
    opt.custom(commands.BASE_URL, "the document viewer's http(s) URL; each row's URL is "
               "<base-url>?token=<token>", base_url, required=True, metavar="URL")
    opt.path(commands.TOKEN_KEY_FILE, "file of token keys, one a line, the first encrypts",
             required=True)
    opt.custom(commands.TOKEN_TTL, "how long a URL works, e.g. 7d, 36h", parse_duration,
               DEFAULT_TTL, metavar="DURATION")
    opt.number(commands.KEEP, "complete epochs to keep; the newest is never deleted",
               DEFAULT_KEEP, minimum=1)
    opt.custom(commands.TIMEZONE, "the district's time zone, which decides what day today is",
               time_zone, "UTC", metavar="ZONE")
    opt.custom("now", "ISO 8601 time with a zone to use as the current time (tests)",
               aware_time, metavar="TIME")
    opt.path(commands.RESULT_FILE, "write the one-line JSON result here")


@dataclass(frozen=True)
class Settings:
    """The checked options of one run."""

    docviewer: Path
    database_url: str
    forms: tuple[str, ...]
    url_prefix: bytes  # CSV-ready start of each URL cell, up to and including `token=`
    url_suffix: bytes
    issuer: TokenIssuer
    keep: int
    now: datetime
    today: date


def settings(args: argparse.Namespace) -> Settings:
    """The run's settings from its checked options; the key file is read here
    (ExportError(TokenKeyInvalid) when it cannot be)."""
    now: datetime = args.now or datetime.now(UTC)
    prefix, suffix = url_cell(args.base_url)
    try:
        keys = read_keys(args.token_key_file)
    except TokenKeyError as exc:
        raise ExportError(TOKEN_KEY_INVALID, str(exc)) from None
    return Settings(docviewer=args.root / tree.DOCVIEWER, database_url=args.database_url,
                    forms=args.forms, url_prefix=prefix, url_suffix=suffix,
                    issuer=TokenIssuer(keys, now + args.token_ttl), keep=args.keep, now=now,
                    today=now.astimezone(args.timezone).date())


def csv_rows(lines: Sequence[Buffer], s: Settings) -> bytes:
    """documents.csv's lines for these export lines (`<id hex>,<four CSV cells>`).

    No Python bytecode runs per row: map() slices the lines, list slices interleave each
    line's cells with the constant URL parts and its token, and one join makes the lines.
    """
    count = len(lines)
    rows: list[Buffer] = [b"," + s.url_prefix] * (4 * count)
    rows[0::4] = map(CSV_COLUMNS, lines)
    rows[2::4] = pieces(s.issuer.tokens(unhexlify(b"".join(map(HEX_ID, lines)))),
                        TOKEN_CHARS, count)
    rows[3::4] = [s.url_suffix + b"\r\n"] * count
    return b"".join(rows)


def export_lines(conn: psycopg.Connection[tuple[object, ...]],
                 size: int) -> Iterator[list[bytes]]:
    """The lines of the export query just started on conn, in lists of `size` (the last one
    shorter). No line is empty (an id and four cells), so an empty piece of the split can
    only be a NULL message, which the query never sends: dropped all the same."""
    pending: list[bytes] = []
    for values in binary_values(conn, STUDENTS_PER_READ):
        pending += filter(None, LINE_SEPARATOR.join(values).split(LINE_SEPARATOR))
        while len(pending) >= size:
            yield pending[:size]
            del pending[:size]
    if pending:
        yield pending


def write_documents(conn: psycopg.Connection[tuple[object, ...]], s: Settings,
                    path: Path) -> int:
    """Stream the export query into path as documents.csv; the number of rows."""
    rows = 0
    # The dates' text is the ISO style whatever the server's or the role's default.
    conn.execute("SET datestyle = ISO")
    with path.open("xb", buffering=1 << 20) as out, conn.cursor() as cur, \
            cur.copy(export_query(conn.info.server_version),
                     {"forms": list(s.forms), "today": s.today}):
        out.write(HEADER)
        for batch in export_lines(conn, BATCH_ROWS):
            out.write(csv_rows(batch, s))
            rows += len(batch)
            if rows == len(batch):
                out.flush()
                checkpoint("docviewer: documents.csv half written")
    return rows


def export(s: Settings) -> DocviewerResult:
    s.docviewer.mkdir(parents=True, exist_ok=True)
    with publish.locked(s.docviewer):
        for name in publish.remove_leftovers(s.docviewer):
            emit("docviewer.leftover_removed", name=name)
        checkpoint("docviewer: locked, leftovers removed")
        try:
            conn = psycopg.connect(s.database_url, connect_timeout=30)
        except psycopg.OperationalError as exc:
            raise ExportError("DatabaseUnavailable",
                              f"cannot connect to the district's database: {exc}") from None
        with conn:
            if ensure_contract(conn):
                emit("docviewer.contract_created", relations=[DOCUMENTS, STUDENTS])
            name = publish.new_epoch_name(s.docviewer, s.now)
            building = publish.start_build(s.docviewer, name)
            published = False
            try:
                started, cpu_started = time.monotonic(), time.process_time()
                rows = write_documents(conn, s, building / CSV_NAME)
                written = time.monotonic()
                size = (building / CSV_NAME).stat().st_size
                # CPU beside wall time: on a busy node the wall clock follows the neighbours.
                emit("docviewer.written", epoch=name, rows=rows, bytes=size,
                     writeSeconds=round(written - started, 3),
                     writeCpuSeconds=round(time.process_time() - cpu_started, 3))
                publish.publish(s.docviewer, building, name)
                emit("docviewer.fsynced", epoch=name,
                     publishSeconds=round(time.monotonic() - written, 3))
                published = True
            finally:
                if not published:
                    publish.remove_leftovers(s.docviewer)
        emit("docviewer.published", epoch=name, rows=rows, bytes=size)
        pruned = publish.prune(s.docviewer, s.keep)
        for old in pruned:
            emit("docviewer.pruned", epoch=old)
        kept = len(publish.complete_epochs(s.docviewer))
    return DocviewerResult(
        outcome=Outcome.SUCCEEDED, epoch=name, rows=rows, bytes=size, today=s.today.isoformat(),
        forms=s.forms, token_expires_at=utc_iso(s.issuer.expires_at),
        completed_at=utc_iso(datetime.now(UTC)), kept=kept, pruned=tuple(pruned),
        message=f"epoch {name}: {rows} documents; {kept} kept, {len(pruned)} pruned")


def run(args: argparse.Namespace) -> int:
    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory")
    code = commands.EXIT_FAILED
    try:
        with jobrun.sigterm_unwinds(), jobrun.collector_paused():
            result = export(settings(args))
        code = commands.EXIT_OK
    except jobrun.FAILURES as exc:
        reason, message = jobrun.failure(exc, "the export query")
        # A key file that cannot be used is bad usage too: nothing was attempted.
        if reason == TOKEN_KEY_INVALID:
            code = commands.EXIT_USAGE
        result = DocviewerResult(outcome=Outcome.FAILED, reason=reason, message=message)
    return jobrun.finish("docviewer", args.result_file, result, code)
