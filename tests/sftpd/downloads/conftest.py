"""Fixtures for the downloads tests: a seeded documents database, a token key, real runs."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sftpd.downloads.contract import contract_sql
from sftpd.downloads.tokens import generate_key

# The day every seeded test runs on (noon UTC, so today is the same date in any zone used).
NOW = "2026-09-15T12:00:00Z"
TODAY = date(2026, 9, 15)
BASE_URL = "https://viewer.example.org/document"
WRITTEN = 'Prior "Written" Notice\nof Action'  # a quote and a newline: CSV must quote it
FORMS = ("IEP", "504 Plan", WRITTEN)


@dataclass(frozen=True)
class Document:
    student_id: str
    form: str
    start: date
    end: date
    complete: bool = True
    deleted: bool = False

    @property
    def row(self) -> tuple[str, str, str, str]:
        return (self.student_id, self.form, self.start.isoformat(), self.end.isoformat())


ACTIVE = (date(2026, 9, 1), date(2027, 8, 31))
# Every state a document or its student can be in; `True` marks the ones exported today.
SEEDED: tuple[tuple[Document, bool], ...] = (
    (Document("S1", "IEP", *ACTIVE), True),
    (Document("S1", "IEP", *ACTIVE, complete=False), False),  # not complete
    (Document("S1", "IEP", date(2025, 9, 1), date(2026, 9, 14)), False),  # ended yesterday
    (Document("S1", "IEP", date(2026, 9, 16), date(2027, 9, 15)), False),  # starts tomorrow
    (Document("S1", "IEP", TODAY, TODAY), True),  # starts and ends today
    (Document("S2", "504 Plan", *ACTIVE), True),  # a form name with a space
    (Document("S2", "ETR", *ACTIVE), False),  # a form not chosen
    (Document("S2", "IEP", *ACTIVE, deleted=True), False),  # the document is deleted
    (Document("S2", WRITTEN, *ACTIVE), True),
    (Document("S3", "IEP", *ACTIVE), False),  # the student is deleted
    (Document("S4", "IEP", *ACTIVE), False),  # the student is unknown
)
STUDENTS = (("S1", False), ("S2", False), ("S3", True))


@dataclass
class Seeded:
    url: str
    expected: dict[int, tuple[str, str, str, str]]  # exported document id -> its CSV row


def seed_documents(url: str, filler: int = 0) -> Seeded:
    """Load the contract and the documents of SEEDED (plus `filler` exported ones for S1)."""
    expected: dict[int, tuple[str, str, str, str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(contract_sql().encode())
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO documents.students VALUES (%s, %s)", STUDENTS)
            for doc, exported in SEEDED:
                cur.execute(
                    "INSERT INTO documents.documents (student_id, form, start_date, end_date,"
                    " complete, deleted, pdf) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (doc.student_id, doc.form, doc.start, doc.end, doc.complete, doc.deleted,
                     b"%PDF-1.4\n"))
                row = cur.fetchone()
                assert row is not None
                if exported:
                    expected[row[0]] = doc.row
            if filler:
                cur.execute(
                    "INSERT INTO documents.documents (student_id, form, start_date, end_date,"
                    " complete) SELECT 'S1', 'IEP', %s, %s + g, true"
                    " FROM generate_series(1, %s) AS g RETURNING id, end_date",
                    (ACTIVE[0], ACTIVE[1], filler))
                for doc_id, end in cur.fetchall():
                    expected[doc_id] = ("S1", "IEP", ACTIVE[0].isoformat(), end.isoformat())
    return Seeded(url=url, expected=expected)


@pytest.fixture
def seeded(database_url: str) -> Seeded:
    return seed_documents(database_url)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "token-key"
    path.write_text(generate_key() + "\n")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "district"
    path.mkdir()
    return path


@dataclass
class Run:
    """One finished `sftpd docviewer` process."""

    returncode: int
    result: dict[str, Any] | None
    events: list[dict[str, Any]]
    stderr: str


def docviewer_argv(root: Path, url: str, key_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sftpd", "docviewer", "--root", str(root),
            "--database-url", url, "--forms", ",".join(FORMS), "--base-url", BASE_URL,
            "--token-key-file", str(key_file), "--now", NOW, *extra]


def run_docviewer(root: Path, url: str, key_file: Path, *extra: str,
                  env: dict[str, str] | None = None) -> Run:
    """Run the real `sftpd docviewer` in its own process to its end (or its kill)."""
    result_file = root.parent / "result.json"
    result_file.unlink(missing_ok=True)
    proc = subprocess.run(
        [*docviewer_argv(root, url, key_file, *extra), "--result-file", str(result_file)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})})
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return Run(proc.returncode, result, events, proc.stderr)


def read_epoch(epoch: Path) -> list[dict[str, str]]:
    """documents.csv of an epoch, parsed with the csv module; checks header and file set."""
    assert sorted(p.name for p in epoch.iterdir()) == ["COMPLETE", "documents.csv"]
    assert (epoch / "COMPLETE").stat().st_size == 0
    text = (epoch / "documents.csv").read_bytes().decode("utf-8")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader)
    assert header == ["Student Id", "Form", "Start Date", "End Date", "URL"]
    return [dict(zip(header, row, strict=True)) for row in reader]


def token_of(url: str) -> str:
    prefix = BASE_URL + "?token="
    assert url.startswith(prefix), url
    return url[len(prefix):]
