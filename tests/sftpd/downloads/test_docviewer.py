"""`sftpd docviewer` against a real seeded PostgreSQL: the rows, the tokens, pruning, usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from district_contract.results import DocviewerResult, parse

from sftpd.downloads.contract import contract_sql
from sftpd.downloads.docviewer import BATCH_ROWS, url_cell
from sftpd.downloads.tokens import TokenRefused, decode_token, generate_key, read_keys
from sftpd.formats.generic_csv import database as generic_csv_database
from tests.sftpd.downloads.conftest import (
    ACTIVE,
    FORMS,
    NOW,
    WRITTEN,
    Seeded,
    read_epoch,
    run_docviewer,
    seed_documents,
    token_of,
)

pytestmark = pytest.mark.postgres
DOCVIEWER = Path("downloads/docviewer")


def token_command(key_file: Path, token: str, *extra: str) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "sftpd", "docviewer-token", "decode", token,
         "--token-key-file", str(key_file), *extra],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return proc.returncode, json.loads(proc.stdout)


def test_documents_csv_holds_exactly_the_right_rows(root: Path, seeded: Seeded,
                                                    key_file: Path) -> None:
    run = run_docviewer(root, seeded.url, key_file)
    assert run.returncode == 0, run.stderr
    assert run.result is not None
    assert run.result["kind"] == "docviewer" and run.result["outcome"] == "Succeeded"
    typed = parse(json.dumps(run.result))  # what the operator will read back
    assert isinstance(typed, DocviewerResult)
    assert (typed.rows, typed.forms, typed.today) == (len(seeded.expected), FORMS, "2026-09-15")
    epochs = sorted(p.name for p in (root / DOCVIEWER).iterdir())
    assert epochs == [run.result["epoch"]] == ["20260915-120000"]
    rows = read_epoch(root / DOCVIEWER / epochs[0])
    assert run.result["rows"] == len(rows) == len(seeded.expected)
    written = next(e for e in run.events if e["event"] == "docviewer.written")
    assert written["rows"] == len(rows) and 0 <= float(written["writeCpuSeconds"]) < 60

    keys = read_keys(key_file)
    now = datetime.fromisoformat(NOW)
    by_document = {}
    for row in rows:
        token = decode_token(keys, token_of(row["URL"]), now)
        by_document[token.document_id] = (row["Student Id"], row["Form"], row["Start Date"],
                                          row["End Date"])
        assert token.expires_at == now + timedelta(days=7)  # the default token TTL
    assert by_document == seeded.expected


def test_rows_across_batches_keep_their_order_and_their_tokens(root: Path, database_url: str,
                                                                key_file: Path) -> None:
    """Over two batches of rows, ids of either sign up to bigint's limits (the id travels as
    16 hex digits, two's complement), and a form that needs CSV quoting in the same rows."""
    seeded = seed_documents(database_url, filler=2 * BATCH_ROWS + 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for document_id in (-(2**63), -5, 2**63 - 1):
            conn.execute("INSERT INTO documents.documents (id, student_id, form, start_date,"
                         " end_date, complete) VALUES (%s, 'S2', %s, %s, %s, true)",
                         (document_id, WRITTEN, *ACTIVE))
            seeded.expected[document_id] = ("S2", WRITTEN, *(d.isoformat() for d in ACTIVE))
    run = run_docviewer(root, seeded.url, key_file)
    assert run.returncode == 0, run.stderr
    assert run.result is not None
    rows = read_epoch(root / DOCVIEWER / run.result["epoch"])
    keys = read_keys(key_file)
    now = datetime.fromisoformat(NOW)
    in_file = [(decode_token(keys, token_of(row["URL"]), now).document_id,
                (row["Student Id"], row["Form"], row["Start Date"], row["End Date"]))
               for row in rows]
    assert dict(in_file) == seeded.expected and len(in_file) > 2 * BATCH_ROWS
    # The export's order: student, form, start date, id (the test cluster collates bytewise).
    assert in_file == sorted(in_file, key=lambda r: (r[1][0], r[1][1], r[1][2], r[0]))


def test_each_token_is_refused_when_tampered_with_or_expired(root: Path, seeded: Seeded,
                                                             key_file: Path,
                                                             tmp_path: Path) -> None:
    run = run_docviewer(root, seeded.url, key_file, "--token-ttl", "36h")
    assert run.returncode == 0, run.stderr
    assert run.result is not None
    rows = read_epoch(root / DOCVIEWER / run.result["epoch"])
    keys = read_keys(key_file)
    other_key = tmp_path / "other-key"
    other_key.write_text(generate_key())
    now = datetime.fromisoformat(NOW)
    expired = (now + timedelta(hours=36)).isoformat()
    for row in rows[:3]:
        token = token_of(row["URL"])
        code, said = token_command(key_file, token, "--now", NOW)
        assert code == 0
        assert said["documentId"] == decode_token(keys, token, now).document_id
        assert said["expiresAt"] == "2026-09-17T00:00:00Z"
        for position in (0, len(token) // 2, len(token) - 2):
            flipped = "A" if token[position] != "A" else "B"
            tampered = token[:position] + flipped + token[position + 1:]
            assert token_command(key_file, tampered, "--now", NOW) == (
                1, {"refused": "invalid",
                    "message": "the token was not made with this key or was altered"})
            with pytest.raises(TokenRefused) as refused:
                decode_token(keys, tampered, now)
            assert refused.value.reason == "invalid"
        assert token_command(other_key, token, "--now", NOW)[1]["refused"] == "invalid"
        code, said = token_command(key_file, token, "--now", expired)
        assert (code, said["refused"]) == (1, "expired")
        with pytest.raises(TokenRefused) as refused:
            decode_token(keys, token, now + timedelta(hours=36))
        assert refused.value.reason == "expired"
        assert decode_token(keys, token, now + timedelta(hours=35, minutes=59)).document_id


def test_students_are_read_through_a_view_over_the_generic_csv_import(
        root: Path, database_url: str, key_file: Path) -> None:
    """docs/downloads.md's view: the contract keeps it, the export reads students through it."""
    with psycopg.connect(database_url) as conn:
        generic_csv_database.prepare(conn)  # the import's own schema, as the importer makes it
        conn.execute("""
            INSERT INTO generic_csv.students (student_id, last_name, first_name, date_of_birth,
                gender_as_written, district_enrollment, building, building_reporting_id)
            VALUES ('A1', 'Nguyen', 'An', '2012-03-04', 'F', 'Resident', 'East', '0101'),
                   ('A2', 'Okafor', 'Ada', '2011-05-06', 'M', 'Resident', 'East', '0101');
            CREATE SCHEMA documents;
            CREATE VIEW documents.students AS
                SELECT g.student_id, false AS deleted
                FROM generic_csv.students AS g;
        """)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(contract_sql().encode())
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = "
                            "'documents.students'::regclass").fetchone()
        assert kind == ("v",)
        conn.execute("""
            INSERT INTO documents.documents (student_id, form, start_date, end_date, complete)
            VALUES ('A1', 'IEP', '2026-01-01', '2026-12-31', true),
                   ('A9', 'IEP', '2026-01-01', '2026-12-31', true)
        """)
    run = run_docviewer(root, database_url, key_file)
    assert run.returncode == 0, run.stderr
    assert run.result is not None
    rows = read_epoch(root / DOCVIEWER / run.result["epoch"])
    assert [r["Student Id"] for r in rows] == ["A1"]


def test_the_job_creates_the_contract_in_an_empty_database(root: Path, database_url: str,
                                                           key_file: Path) -> None:
    run = run_docviewer(root, database_url, key_file)
    assert run.returncode == 0, run.stderr
    assert any(e["event"] == "docviewer.contract_created" for e in run.events)
    assert run.result is not None and run.result["rows"] == 0
    assert read_epoch(root / DOCVIEWER / run.result["epoch"]) == []


def test_keep_prunes_the_oldest_complete_epochs_first(root: Path, seeded: Seeded,
                                                      key_file: Path) -> None:
    names = []
    for day in range(4):
        now = (datetime(2026, 9, 15, 12, tzinfo=UTC) + timedelta(days=day)).isoformat()
        run = run_docviewer(root, seeded.url, key_file, "--keep", "2", "--now", now)
        assert run.returncode == 0, run.stderr
        assert run.result is not None
        names.append(run.result["epoch"])
        assert run.result["kept"] == min(day + 1, 2)
    assert run.result["pruned"] == [names[1]]
    assert sorted(p.name for p in (root / DOCVIEWER).iterdir()) == names[2:]
    # A clock stepped back never publishes an epoch that sorts before the newest one.
    run = run_docviewer(root, seeded.url, key_file, "--keep", "2")
    assert run.result is not None and run.result["epoch"] > names[-1]
    assert sorted(p.name for p in (root / DOCVIEWER).iterdir()) == [names[3],
                                                                    run.result["epoch"]]


@pytest.mark.parametrize(("extra", "reason", "words"), [
    (("--forms", " , "), "InvalidArguments", "--forms names no form"),
    (("--keep", "0"), "InvalidArguments", "argument --keep: '0': must be at least 1, not 0"),
    (("--token-ttl", "forever"), "InvalidArguments", "not a duration"),
    (("--base-url", "javascript:alert(1)"), "InvalidArguments", "must be an http(s) URL"),
    (("--timezone", "Mars/Olympus"), "InvalidArguments", "Mars/Olympus"),
    (("--now", "2026-09-15T12:00:00"), "InvalidArguments", "needs a time zone"),
])
def test_bad_usage_exits_2_and_touches_nothing(root: Path, key_file: Path, extra: tuple[str, ...],
                                               reason: str, words: str) -> None:
    run = run_docviewer(root, "postgresql:///never-used", key_file, *extra)
    assert run.returncode == 2
    assert run.result is not None
    assert (run.result["outcome"], run.result["reason"]) == ("Failed", reason)
    assert words in run.result["message"]
    assert not (root / "downloads").exists()


def test_a_bad_key_file_exits_2_without_echoing_it(root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-key"
    bad.write_text("not-a-key-but-secret-looking\n")
    run = run_docviewer(root, "postgresql:///never-used", bad)
    assert run.returncode == 2
    assert run.result is not None and run.result["reason"] == "TokenKeyInvalid"
    assert "line 1" in run.result["message"]
    assert "secret-looking" not in json.dumps(run.result) + run.stderr


def test_an_unreachable_database_fails_with_exit_1_and_publishes_nothing(
        root: Path, key_file: Path) -> None:
    run = run_docviewer(root, "postgresql://127.0.0.1:1/none?connect_timeout=2", key_file)
    assert run.returncode == 1
    assert run.result is not None and run.result["reason"] == "DatabaseUnavailable"
    assert list((root / DOCVIEWER).iterdir()) == []


def test_a_base_url_with_a_query_or_a_comma_stays_one_csv_cell() -> None:
    assert url_cell("https://v.example/d?district=a") == (
        b"https://v.example/d?district=a&token=", b"")
    assert url_cell("https://v.example/a,b") == (b'"https://v.example/a,b?token=', b'"')
