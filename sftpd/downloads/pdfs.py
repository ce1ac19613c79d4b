"""`sftpd pdfs`: the chosen documents' PDFs, published as a complete epoch in downloads/pdfs."""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast

import psycopg
from district_contract import commands
from district_contract.results import Outcome, PdfsResult

from sftpd import options, tree
from sftpd.downloads import jobrun, publish
from sftpd.downloads.contract import DOCUMENTS, STUDENTS, ensure_contract
from sftpd.downloads.docviewer import parse_forms, time_zone
from sftpd.downloads.jobrun import ExportError
from sftpd.downloads.tokens import aware_time
from sftpd.epochs.checkpoints import checkpoint
from sftpd.events import emit, utc_iso
from sftpd.options import UsageError

INDEX_NAME = "index.csv"
INDEX_HEADER = ("Student Id", "Form", "Start Date", "End Date", "File", "SHA256")
DEFAULT_KEEP_DAYS = 2
MAX_STUDENTS = 10_000
# A student id becomes a directory name: Generic CSV ids are letters and digits (at most 20);
# anything that could not be one safe path component is skipped, never rewritten.
SAFE_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")
PDF_HEADER = b"%PDF-"
PDF_TRAILER = b"%%EOF"
TRAILER_WINDOW = 1024  # readers accept %%EOF within the last kilobyte
ROWS_PER_FETCH = 8  # PDFs are fetched a few at a time: memory stays a few documents' worth
EXTRACT_QUERY = """
SELECT d.id, d.student_id, d.form, to_char(d.start_date, 'YYYY-MM-DD'),
       to_char(d.end_date, 'YYYY-MM-DD'), d.pdf
FROM documents.documents AS d
WHERE d.complete AND NOT d.deleted
  AND d.form = ANY(%(forms)s)
  AND d.start_date <= %(today)s AND d.end_date >= %(today)s
  AND (%(students)s::text[] IS NULL OR d.student_id = ANY(%(students)s))
  AND EXISTS (SELECT 1 FROM documents.students AS s
              WHERE s.student_id = d.student_id AND NOT s.deleted)
ORDER BY d.student_id, d.form, d.start_date, d.id
"""


DocumentRow = tuple[int, str, str, str, str, bytes | None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt = options.prepare(parser)
    opt.path(commands.ROOT, "the district's volume", required=True)
    opt.database_url()
    opt.custom(commands.FORMS, "the form types to extract, separated by commas (form names may "
               "hold spaces)", parse_forms, required=True, metavar="FORMS")
    opt.items(commands.STUDENTS, "only these student ids (default: every student)",
              metavar="ID")
    opt.number(commands.KEEP_DAYS, "remove extractions older than this many days",
               DEFAULT_KEEP_DAYS, minimum=1)
    opt.custom(commands.TIMEZONE, "the district's time zone, which decides what day today is",
               time_zone, "UTC", metavar="ZONE")
    opt.custom("now", "ISO 8601 time with a zone to use as the current time (tests)",
               aware_time, metavar="TIME")
    opt.path(commands.RESULT_FILE, "write the one-line JSON result here")


@dataclass(frozen=True)
class Settings:
    """The checked options of one run."""

    pdfs: Path
    database_url: str
    forms: tuple[str, ...]
    students: tuple[str, ...] | None
    keep_days: int
    now: datetime
    today: date


def settings(args: argparse.Namespace) -> Settings:
    """The run's settings from its checked options."""
    students = tuple(dict.fromkeys(args.students))
    if len(students) > MAX_STUDENTS:
        raise UsageError(f"--students: at most {MAX_STUDENTS} ids, not {len(students)}")
    now: datetime = args.now or datetime.now(UTC)
    return Settings(pdfs=args.root / tree.PDFS, database_url=args.database_url,
                    forms=args.forms, students=students or None, keep_days=args.keep_days,
                    now=now, today=now.astimezone(args.timezone).date())


def why_not_written(student_id: str, pdf: bytes) -> str | None:
    """The reason a chosen document cannot be written as a PDF file, or None."""
    if not pdf.startswith(PDF_HEADER) or PDF_TRAILER not in pdf[-TRAILER_WINDOW:]:
        return "its bytes are not a PDF (no %PDF- header or no %%EOF at the end)"
    if not SAFE_STUDENT_ID.match(student_id):
        return f"student id {student_id!r} cannot be a directory name"
    return None


def file_name(form: str, start: str, document_id: int) -> str:
    """`<form>_<start date>_<id>.pdf`, the form made file-safe (the id keeps names unique)."""
    safe_form = UNSAFE_IN_NAME.sub("-", form).strip("-.")[:80] or "document"
    return f"{safe_form}_{start}_{document_id}.pdf"


@dataclass
class Written:
    documents: int = 0
    bytes: int = 0


def write_pdfs(conn: psycopg.Connection[tuple[object, ...]], s: Settings, building: Path,
               skipped: list[str]) -> Written:
    """Write each chosen document's PDF under building/<student id>/ and the index beside."""
    written = Written()
    params = {"forms": list(s.forms), "today": s.today,
              "students": None if s.students is None else list(s.students)}
    with (building / INDEX_NAME).open("x", newline="", encoding="utf-8") as index, \
            conn.cursor(name="pdfs") as cur:
        rows = csv.writer(index, lineterminator="\r\n")
        rows.writerow(INDEX_HEADER)
        cur.itersize = ROWS_PER_FETCH
        cur.execute(EXTRACT_QUERY, params)
        for row in cur:
            # The query's column types: bigint, text, text, text, text, bytea (or null).
            doc_id, student_id, form, start, end, pdf = cast(DocumentRow, row)
            reason = "it has no PDF" if pdf is None else why_not_written(student_id, pdf)
            if reason is not None or pdf is None:
                skipped.append(f"{doc_id}: {reason}")
                emit("pdfs.skipped", document=doc_id, reason=reason)
                continue
            folder = building / student_id
            folder.mkdir(exist_ok=True)
            name = file_name(form, start, doc_id)
            data = bytes(pdf)
            with (folder / name).open("xb") as out:
                out.write(data)
            rows.writerow((student_id, form, start, end, f"{student_id}/{name}",
                           hashlib.sha256(data).hexdigest()))
            written.documents += 1
            written.bytes += len(data)
            if written.documents == 1:
                checkpoint("pdfs: first PDF written")
    return written


def extract(s: Settings) -> PdfsResult:
    s.pdfs.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    with publish.locked(s.pdfs):
        for name in publish.remove_leftovers(s.pdfs):
            emit("pdfs.leftover_removed", name=name)
        checkpoint("pdfs: locked, leftovers removed")
        try:
            conn = psycopg.connect(s.database_url, connect_timeout=30)
        except psycopg.OperationalError as exc:
            raise ExportError("DatabaseUnavailable",
                              f"cannot connect to the district's database: {exc}") from None
        with conn:
            if ensure_contract(conn):
                emit("pdfs.contract_created", relations=[DOCUMENTS, STUDENTS])
            name = publish.new_epoch_name(s.pdfs, s.now)
            building = publish.start_build(s.pdfs, name)
            published = False
            try:
                written = write_pdfs(conn, s, building, skipped)
                publish.publish(s.pdfs, building, name)
                published = True
            finally:
                if not published:
                    publish.remove_leftovers(s.pdfs)
        emit("pdfs.published", epoch=name, documents=written.documents,
             bytes=written.bytes, skipped=len(skipped))
        pruned = publish.prune_older_than(s.pdfs, s.now - timedelta(days=s.keep_days))
        for old in pruned:
            emit("pdfs.pruned", epoch=old)
    return PdfsResult(
        outcome=Outcome.SUCCEEDED, epoch=name, documents=written.documents,
        bytes=written.bytes, today=s.today.isoformat(), forms=s.forms, skipped=tuple(skipped),
        completed_at=utc_iso(datetime.now(UTC)), keep_days=s.keep_days, pruned=tuple(pruned),
        message=f"epoch {name}: {written.documents} PDFs, {len(skipped)} skipped; "
                f"{len(pruned)} pruned")


def run(args: argparse.Namespace) -> int:
    root: Path = args.root
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a directory")
    s = settings(args)
    code = commands.EXIT_FAILED
    try:
        with jobrun.sigterm_unwinds(), jobrun.collector_paused():
            result = extract(s)
        code = commands.EXIT_OK
    except jobrun.FAILURES as exc:
        reason, message = jobrun.failure(exc, "the extraction query")
        result = PdfsResult(outcome=Outcome.FAILED, reason=reason, message=message)
    return jobrun.finish("pdfs", args.result_file, result, code)
