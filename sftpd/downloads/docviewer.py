"""`sftpd docviewer`: tonight's documents.csv, published as a complete docviewer epoch."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from district_contract import commands
from district_contract.results import DocviewerResult, Outcome, write

from sftpd import tree
from sftpd.backup.events import log_event, utc_iso
from sftpd.downloads import publish
from sftpd.downloads.contract import DOCUMENTS, STUDENTS, ensure_contract
from sftpd.downloads.tokens import TokenIssuer, TokenKeyError, parse_duration, read_keys
from sftpd.epochs import checkpoints
from sftpd.epochs.checkpoints import checkpoint

CSV_NAME = "documents.csv"
HEADER = b"Student Id,Form,Start Date,End Date,URL\r\n"
DEFAULT_KEEP = 7
DEFAULT_TTL = "7d"
MAX_FORMS = 200
MAX_FORM_CHARS = 200
# The id comes last so each COPY row (one row per CopyData message, by the protocol) splits
# at its last comma: the four columns before it are already CSV, quoted by PostgreSQL.
EXPORT_QUERY = """
COPY (
    SELECT d.student_id, d.form, to_char(d.start_date, 'YYYY-MM-DD'),
           to_char(d.end_date, 'YYYY-MM-DD'), d.id
    FROM documents.documents AS d
    WHERE d.complete AND NOT d.deleted
      AND d.form = ANY(%(forms)s)
      AND d.start_date <= %(today)s AND d.end_date >= %(today)s
      AND EXISTS (SELECT 1 FROM documents.students AS s
                  WHERE s.student_id = d.student_id AND NOT s.deleted)
    ORDER BY d.student_id, d.form, d.start_date, d.id
) TO STDOUT (FORMAT csv)
"""


class ExportError(Exception):
    """The run failed before publishing; reason is a short CamelCase word for the result."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Stopped(BaseException):
    """SIGTERM arrived: unwind through the cleanups, then report."""


def _env(option: str, default: str | None = None) -> str | None:
    return os.environ.get(commands.env_var(option), default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = commands.EXIT_CODES_HELP
    root = _env(commands.ROOT)
    parser.add_argument("--root", type=Path, default=root,
                        help=f"the district's volume (env {commands.env_var(commands.ROOT)})")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="libpq URL of the district's database (env DATABASE_URL)")
    parser.add_argument("--forms", default=_env(commands.FORMS, ""),
                        help="the form types to export, separated by commas (form names may "
                             f"hold spaces) (env {commands.env_var(commands.FORMS)})")
    parser.add_argument("--base-url", default=_env(commands.BASE_URL),
                        help="the document viewer's http(s) URL; each row's URL is "
                             "<base-url>?token=<token> (env "
                             f"{commands.env_var(commands.BASE_URL)})")
    parser.add_argument("--token-key-file", type=Path, default=_env(commands.TOKEN_KEY_FILE),
                        help="file of Fernet keys, one a line, the first encrypts (env "
                             f"{commands.env_var(commands.TOKEN_KEY_FILE)})")
    parser.add_argument("--token-ttl", default=_env(commands.TOKEN_TTL, DEFAULT_TTL),
                        help="how long a URL works, e.g. 7d, 36h (env "
                             f"{commands.env_var(commands.TOKEN_TTL)}; default {DEFAULT_TTL})")
    parser.add_argument("--keep", default=_env(commands.KEEP, str(DEFAULT_KEEP)),
                        help="complete epochs to keep, at least 1 (env "
                             f"{commands.env_var(commands.KEEP)}; default {DEFAULT_KEEP})")
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

    docviewer: Path
    database_url: str
    forms: tuple[str, ...]
    url_prefix: bytes  # CSV-ready start of each URL cell, up to and including `token=`
    url_suffix: bytes
    issuer: TokenIssuer
    keep: int
    now: datetime
    today: date


def parse_forms(text: str) -> tuple[str, ...]:
    forms = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    if not forms:
        raise ExportError("InvalidArguments", "--forms names no form: choose at least one")
    if len(forms) > MAX_FORMS or any(len(f) > MAX_FORM_CHARS for f in forms):
        raise ExportError("InvalidArguments", f"--forms: at most {MAX_FORMS} forms of at most "
                                              f"{MAX_FORM_CHARS} characters each")
    return forms


def url_cell(base_url: str) -> tuple[bytes, bytes]:
    """The CSV bytes before and after each token in the URL column."""
    parts = urlsplit(base_url)
    if (parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment
            or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in base_url)):
        raise ExportError("InvalidArguments", f"--base-url {base_url!r} must be an http(s) URL "
                                              "with a host, no fragment and no whitespace")
    joined = base_url + ("&" if parts.query else "?") + "token="
    if any(ch in joined for ch in ',"'):
        return b'"' + joined.replace('"', '""').encode(), b'"'
    return joined.encode(), b""


def parse_now(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ExportError("InvalidArguments", f"--now {text!r} needs a time zone")
    return moment


def settings(args: argparse.Namespace) -> Settings:
    """Check every option before anything is touched; ExportError(InvalidArguments...)."""
    if args.root is None:
        raise ExportError("InvalidArguments", "--root (or SFTPD_ROOT) is required")
    if not args.root.is_dir():
        raise ExportError("InvalidArguments", f"--root {args.root} is not a directory")
    if not args.database_url:
        raise ExportError("InvalidArguments", "--database-url (or DATABASE_URL) is required")
    if not args.base_url:
        raise ExportError("InvalidArguments", "--base-url (or SFTPD_BASE_URL) is required")
    if args.token_key_file is None:
        raise ExportError("InvalidArguments",
                          "--token-key-file (or SFTPD_TOKEN_KEY_FILE) is required")
    forms = parse_forms(args.forms)
    prefix, suffix = url_cell(args.base_url)
    try:
        keep = int(args.keep)
        ttl = parse_duration(args.token_ttl)
        zone = ZoneInfo(args.timezone)
        now = parse_now(args.now)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise ExportError("InvalidArguments", str(exc)) from None
    if keep < 1:
        raise ExportError("InvalidArguments", "--keep must be at least 1 (the newest epoch is "
                                              f"always kept), not {keep}")
    try:
        keys = read_keys(args.token_key_file)
    except TokenKeyError as exc:
        raise ExportError("TokenKeyInvalid", str(exc)) from None
    return Settings(docviewer=args.root / tree.DOCVIEWER, database_url=args.database_url,
                    forms=forms, url_prefix=prefix, url_suffix=suffix,
                    issuer=TokenIssuer(keys, now + ttl), keep=keep, now=now,
                    today=now.astimezone(zone).date())


def write_documents(conn: psycopg.Connection[tuple[object, ...]], s: Settings,
                    path: Path) -> int:
    """Stream the export query into path as documents.csv; the number of rows."""
    rows = 0
    token = s.issuer.token
    prefix, suffix = s.url_prefix, s.url_suffix
    with path.open("xb", buffering=1 << 20) as out, conn.cursor() as cur, \
            cur.copy(EXPORT_QUERY, {"forms": list(s.forms), "today": s.today}) as copy:
        out.write(HEADER)
        for data in copy:
            head, _, doc_id = bytes(data).rstrip(b"\n").rpartition(b",")
            out.write(b"%s,%s%s%s\r\n" % (head, prefix, token(int(doc_id)), suffix))
            rows += 1
            if rows == 1:
                out.flush()
                checkpoint("docviewer: documents.csv half written")
    return rows


def export(s: Settings) -> DocviewerResult:
    s.docviewer.mkdir(parents=True, exist_ok=True)
    with publish.locked(s.docviewer):
        for name in publish.remove_leftovers(s.docviewer):
            log_event("docviewer-leftover-removed", name=name)
        checkpoint("docviewer: locked, leftovers removed")
        try:
            conn = psycopg.connect(s.database_url, connect_timeout=30)
        except psycopg.OperationalError as exc:
            raise ExportError("DatabaseUnavailable",
                              f"cannot connect to the district's database: {exc}") from None
        with conn:
            if ensure_contract(conn):
                log_event("docviewer-contract-created", relations=[DOCUMENTS, STUDENTS])
            name = publish.new_epoch_name(s.docviewer, s.now)
            building = publish.start_build(s.docviewer, name)
            published = False
            try:
                started = time.monotonic()
                rows = write_documents(conn, s, building / CSV_NAME)
                written = time.monotonic()
                size = (building / CSV_NAME).stat().st_size
                log_event("docviewer-written", epoch=name, rows=rows, bytes=size,
                          writeSeconds=round(written - started, 3))
                publish.publish(s.docviewer, building, name)
                log_event("docviewer-fsynced", epoch=name,
                          publishSeconds=round(time.monotonic() - written, 3))
                published = True
            finally:
                if not published:
                    publish.remove_leftovers(s.docviewer)
        log_event("docviewer-published", epoch=name, rows=rows, bytes=size)
        pruned = publish.prune(s.docviewer, s.keep)
        for old in pruned:
            log_event("docviewer-pruned", epoch=old)
        kept = len(publish.complete_epochs(s.docviewer))
    return DocviewerResult(
        outcome=Outcome.SUCCEEDED, epoch=name, rows=rows, bytes=size, today=s.today.isoformat(),
        forms=s.forms, token_expires_at=utc_iso(s.issuer.expires_at),
        completed_at=utc_iso(datetime.now(UTC)), kept=kept, pruned=tuple(pruned),
        message=f"epoch {name}: {rows} documents; {kept} kept, {len(pruned)} pruned")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def run(args: argparse.Namespace) -> int:
    code = commands.EXIT_FAILED
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = export(settings(args))
        code = commands.EXIT_OK
    except ExportError as exc:
        usage = exc.reason in ("InvalidArguments", "TokenKeyInvalid")
        code = commands.EXIT_USAGE if usage else commands.EXIT_FAILED
        result = DocviewerResult(outcome=Outcome.FAILED, reason=exc.reason, message=exc.message)
    except publish.Busy as exc:
        result = DocviewerResult(outcome=Outcome.FAILED, reason="Busy", message=str(exc))
    except _Stopped:
        result = DocviewerResult(outcome=Outcome.FAILED, reason="Interrupted",
                                 message="stopped (SIGTERM) before publishing; nothing partial "
                                         "is visible")
    except psycopg.errors.UndefinedTable as exc:
        result = DocviewerResult(outcome=Outcome.FAILED, reason="ContractMismatch",
                                 message=f"the documents contract is not met: {exc}")
    except psycopg.errors.UndefinedColumn as exc:
        result = DocviewerResult(outcome=Outcome.FAILED, reason="ContractMismatch",
                                 message=f"the documents contract is not met: {exc}")
    except psycopg.Error as exc:
        result = DocviewerResult(outcome=Outcome.FAILED, reason="DatabaseError",
                                 message=f"the export query failed: {exc}")
    except OSError as exc:
        reason = "DiskFull" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "FileSystemError"
        result = DocviewerResult(outcome=Outcome.FAILED, reason=reason,
                                 message=f"writing the epoch failed: {exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.failed:
        log_event("docviewer-failed", reason=result.reason, message=result.message)
    line = write(args.result_file, result)
    log_event("docviewer-result", result=line, checkpoints=checkpoints.passed())
    return code
