"""`sftpd pdfs` against a real seeded PostgreSQL: the right PDFs, each checked by qpdf, the
index, the students filter, keepDays pruning, and SIGKILL at every step."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from district_contract.results import PdfsResult, parse

from sftpd.epochs.checkpoints import KILL_AT_ENV
from tests.conftest import require_binary
from tests.sftpd.downloads.conftest import FORMS, NOW, Seeded, seed_documents

pytestmark = pytest.mark.postgres
PDFS = Path("downloads/pdfs")


def make_pdf(text: str) -> bytes:
    """A small valid one-page PDF 1.4 saying text (offsets computed, so qpdf --check passes)."""
    content = b"BT /F1 12 Tf 72 720 Td (" + text.encode() + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return out


@pytest.fixture
def with_pdfs(database_url: str) -> tuple[Seeded, dict[int, str]]:
    """The seeded documents with a real PDF each, except two chosen ones: the ids skipped."""
    seeded = seed_documents(database_url)
    # One of S1's and one of S2's, so each student keeps a PDF that is written.
    ids = sorted(seeded.expected)
    not_a_pdf, no_pdf = ids[0], ids[-1]
    assert seeded.expected[not_a_pdf][0] == "S1" and seeded.expected[no_pdf][0] == "S2"
    with psycopg.connect(database_url, autocommit=True) as conn:
        for (doc_id,) in conn.execute("SELECT id FROM documents.documents").fetchall():
            conn.execute("UPDATE documents.documents SET pdf = %s WHERE id = %s",
                         (make_pdf(f"document {doc_id}"), doc_id))
        conn.execute("UPDATE documents.documents SET pdf = %s WHERE id = %s",
                     (b"<html>not a PDF</html>", not_a_pdf))
        conn.execute("UPDATE documents.documents SET pdf = NULL WHERE id = %s", (no_pdf,))
    return seeded, {not_a_pdf: "not a PDF", no_pdf: "no PDF"}


def run_pdfs(root: Path, url: str, *extra: str,
             env: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None]:
    result_file = root.parent / "pdfs-result.json"
    result_file.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "sftpd", "pdfs", "--root", str(root), "--database-url", url,
         "--forms", ",".join(FORMS), "--now", NOW, "--result-file", str(result_file), *extra],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})})
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return proc.returncode, result


def read_pdf_epoch(epoch: Path) -> list[dict[str, str]]:
    """The index of an epoch, after checking it lists exactly the files there, intact."""
    assert (epoch / "COMPLETE").stat().st_size == 0
    with (epoch / "index.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, strict=True))
    files = {str(p.relative_to(epoch)) for p in epoch.rglob("*") if p.is_file()}
    assert files == {"COMPLETE", "index.csv", *(r["File"] for r in rows)}
    for row in rows:
        data = (epoch / row["File"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["SHA256"]
        assert row["File"].startswith(row["Student Id"] + "/")
    return rows


def test_every_chosen_document_is_written_as_a_valid_pdf(
        root: Path, with_pdfs: tuple[Seeded, dict[int, str]]) -> None:
    qpdf = require_binary("qpdf")
    seeded, skipped = with_pdfs
    code, result = run_pdfs(root, seeded.url)
    assert code == 0 and result is not None, result
    assert (result["kind"], result["outcome"]) == ("pdfs", "Succeeded")
    typed = parse(json.dumps(result))  # what the operator will read back
    assert isinstance(typed, PdfsResult) and typed.skipped == tuple(result["skipped"])
    epoch = root / PDFS / result["epoch"]
    rows = read_pdf_epoch(epoch)
    wanted = {i: r for i, r in seeded.expected.items() if i not in skipped}
    assert sorted((r["Student Id"], r["Form"], r["Start Date"], r["End Date"]) for r in rows) \
        == sorted(wanted.values())
    assert result["documents"] == len(rows) == len(wanted)
    assert sorted(int(s.split(":")[0]) for s in result["skipped"]) == sorted(skipped)
    with psycopg.connect(seeded.url) as conn:
        for row in rows:
            doc_id = int(row["File"].rsplit("_", 1)[1].removesuffix(".pdf"))
            stored = conn.execute("SELECT pdf FROM documents.documents WHERE id = %s",
                                  (doc_id,)).fetchone()
            assert stored is not None and (epoch / row["File"]).read_bytes() == stored[0]
            check = subprocess.run([qpdf, "--check", str(epoch / row["File"])],
                                   capture_output=True, text=True, check=False)
            assert check.returncode == 0, check.stdout + check.stderr


def test_only_the_chosen_students(root: Path,
                                  with_pdfs: tuple[Seeded, dict[int, str]]) -> None:
    seeded, _ = with_pdfs
    code, result = run_pdfs(root, seeded.url, "--students", "S2 S3")
    assert code == 0 and result is not None
    rows = read_pdf_epoch(root / PDFS / result["epoch"])
    assert {r["Student Id"] for r in rows} == {"S2"}  # S3 is deleted
    everyone = run_pdfs(root, seeded.url, "--now", "2026-09-15T12:30:00Z")[1]
    assert everyone is not None
    assert {r["Student Id"] for r in read_pdf_epoch(root / PDFS / everyone["epoch"])} == {
        "S1", "S2"}


def test_epochs_older_than_keep_days_are_removed(
        root: Path, with_pdfs: tuple[Seeded, dict[int, str]]) -> None:
    seeded, _ = with_pdfs
    start = datetime.fromisoformat(NOW)
    names = []
    for days in (0, 1, 3):
        now = (start + timedelta(days=days)).astimezone(UTC).isoformat()
        code, result = run_pdfs(root, seeded.url, "--keep-days", "2", "--now", now)
        assert code == 0 and result is not None
        names.append(result["epoch"])
    assert result["pruned"] == names[:1]
    assert sorted(p.name for p in (root / PDFS).iterdir()) == names[1:]


def test_killed_at_every_checkpoint_never_shows_a_partial_extraction(
        root: Path, with_pdfs: tuple[Seeded, dict[int, str]]) -> None:
    seeded, _ = with_pdfs
    code, result = run_pdfs(root, seeded.url)
    assert code == 0 and result is not None
    published = [result["epoch"]]
    for kill_at in range(1, 6):  # locked, first PDF, fsynced, COMPLETE, renamed
        code, _ = run_pdfs(root, seeded.url, env={KILL_AT_ENV: str(kill_at)})
        assert code == -signal.SIGKILL, kill_at
        visible = sorted(p.name for p in (root / PDFS).iterdir() if not p.name.startswith("."))
        assert visible[: len(published)] == published, kill_at
        for name in visible:
            read_pdf_epoch(root / PDFS / name)
        code, result = run_pdfs(root, seeded.url)
        assert code == 0 and result is not None, kill_at
        published = sorted(p.name for p in (root / PDFS).iterdir())
        assert published[-1] == result["epoch"], kill_at
        assert not [n for n in published if n.startswith(".")], kill_at


def test_no_forms_is_bad_usage(root: Path) -> None:
    code, result = run_pdfs(root, "postgresql:///never-used", "--forms", "")
    assert code == 2 and result is not None and result["reason"] == "InvalidArguments"
