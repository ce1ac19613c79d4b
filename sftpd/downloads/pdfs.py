"""`sftpd pdfs`: the chosen documents' PDFs, published as a complete epoch in downloads/pdfs."""

from __future__ import annotations

import argparse
import csv
import errno
import hashlib
import os
import re
import signal
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from district_contract import commands
from district_contract.results import Outcome, PdfsResult, write

from sftpd import tree
from sftpd.backup.events import log_event, utc_iso
from sftpd.downloads import publish
from sftpd.downloads.contract import DOCUMENTS, STUDENTS, ensure_contract
from sftpd.downloads.docviewer import ExportError, parse_forms, parse_now
from sftpd.epochs import checkpoints
from sftpd.epochs.checkpoints import checkpoint

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


class _Stopped(BaseException):
    """SIGTERM arrived: unwind through the cleanups, then report."""


def _env(option: str, default: str | None = None) -> str | None:
    return os.environ.get(commands.env_var(option), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = commands.EXIT_CODES_HELP
    parser.add_argument("--root", type=Path, default=_env(commands.ROOT),
                        help=f"the district's volume (env {commands.env_var(commands.ROOT)})")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="libpq URL of the district's database (env DATABASE_URL)")
    parser.add_argument("--forms", default=_env(commands.FORMS, ""),
                        help="the form types to extract, separated by commas (env "
                             f"{commands.env_var(commands.FORMS)})")
    parser.add_argument("--students", default=_env(commands.STUDENTS, ""),
                        help="only these student ids, separated by commas or spaces (env "
                             f"{commands.env_var(commands.STUDENTS)}; default: every student)")
    parser.add_argument("--keep-days", default=_env(commands.KEEP_DAYS, str(DEFAULT_KEEP_DAYS)),
                        help="remove extractions older than this many days, at least 1 (env "
                             f"{commands.env_var(commands.KEEP_DAYS)}; default "
                             f"{DEFAULT_KEEP_DAYS})")
    parser.add_argument("--timezone", default=_env(commands.TIMEZONE, "UTC"),
                        help="the district's time zone, which decides what day today is (env "
                             f"{commands.env_var(commands.TIMEZONE)}; default UTC)")
    parser.add_argument("--now", default=_env("now"),
                        help="ISO 8601 time with a zone to use as the current time (tests)")
    result_file = _env(commands.RESULT_FILE)
    parser.add_argument("--result-file", type=Path,
                        default=None if result_file is None else Path(result_file),
                        help="write the one-line JSON result here (env "
                             f"{commands.env_var(commands.RESULT_FILE)})")


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
    if args.root is None or not args.root.is_dir():
        raise ExportError("InvalidArguments", "--root (or SFTPD_ROOT) must be a directory")
    if not args.database_url:
        raise ExportError("InvalidArguments", "--database-url (or DATABASE_URL) is required")
    forms = parse_forms(args.forms)
    students = tuple(dict.fromkeys(commands.separated(args.students)))
    if len(students) > MAX_STUDENTS:
        raise ExportError("InvalidArguments", f"--students: at most {MAX_STUDENTS} ids")
    try:
        keep_days = int(args.keep_days)
        zone = ZoneInfo(args.timezone)
        now = parse_now(args.now)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise ExportError("InvalidArguments", str(exc)) from None
    if keep_days < 1:
        raise ExportError("InvalidArguments", f"--keep-days must be at least 1, not {keep_days}")
    return Settings(pdfs=args.root / tree.PDFS, database_url=args.database_url, forms=forms,
                    students=students or None, keep_days=keep_days, now=now,
                    today=now.astimezone(zone).date())


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
                log_event("pdfs-skipped", document=doc_id, reason=reason)
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
            log_event("pdfs-leftover-removed", name=name)
        checkpoint("pdfs: locked, leftovers removed")
        try:
            conn = psycopg.connect(s.database_url, connect_timeout=30)
        except psycopg.OperationalError as exc:
            raise ExportError("DatabaseUnavailable",
                              f"cannot connect to the district's database: {exc}") from None
        with conn:
            if ensure_contract(conn):
                log_event("pdfs-contract-created", relations=[DOCUMENTS, STUDENTS])
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
        log_event("pdfs-published", epoch=name, documents=written.documents,
                  bytes=written.bytes, skipped=len(skipped))
        pruned = publish.prune_older_than(s.pdfs, s.now - timedelta(days=s.keep_days))
        for old in pruned:
            log_event("pdfs-pruned", epoch=old)
    return PdfsResult(
        outcome=Outcome.SUCCEEDED, epoch=name, documents=written.documents,
        bytes=written.bytes, today=s.today.isoformat(), forms=s.forms, skipped=tuple(skipped),
        completed_at=utc_iso(datetime.now(UTC)), keep_days=s.keep_days, pruned=tuple(pruned),
        message=f"epoch {name}: {written.documents} PDFs, {len(skipped)} skipped; "
                f"{len(pruned)} pruned")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def run(args: argparse.Namespace) -> int:
    code = commands.EXIT_FAILED
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = extract(settings(args))
        code = commands.EXIT_OK
    except ExportError as exc:
        code = commands.EXIT_USAGE if exc.reason == "InvalidArguments" else commands.EXIT_FAILED
        result = PdfsResult(outcome=Outcome.FAILED, reason=exc.reason, message=exc.message)
    except publish.Busy as exc:
        result = PdfsResult(outcome=Outcome.FAILED, reason="Busy", message=str(exc))
    except _Stopped:
        result = PdfsResult(outcome=Outcome.FAILED, reason="Interrupted",
                            message="stopped (SIGTERM) before publishing; nothing partial is "
                                    "visible")
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        result = PdfsResult(outcome=Outcome.FAILED, reason="ContractMismatch",
                            message=f"the documents contract is not met: {exc}")
    except psycopg.Error as exc:
        result = PdfsResult(outcome=Outcome.FAILED, reason="DatabaseError",
                            message=f"the extraction query failed: {exc}")
    except OSError as exc:
        reason = "DiskFull" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "FileSystemError"
        result = PdfsResult(outcome=Outcome.FAILED, reason=reason,
                            message=f"writing the epoch failed: {exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.failed:
        log_event("pdfs-failed", reason=result.reason, message=result.message)
    line = write(args.result_file, result)
    log_event("pdfs-result", result=line, checkpoints=checkpoints.passed())
    return code
