"""documents.csv's lines, made a batch at a time: byte for byte the per-row recipe, hostile
values included, each token opening its own document; and what the job's process imports."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sftpd.downloads import docviewer, tokens
from sftpd.downloads.docviewer import BATCH_ROWS, HEADER, Settings, url_cell, write_documents
from sftpd.downloads.tokens import TokenIssuer, decode_token, read_keys
from tests.sftpd.downloads.conftest import ACTIVE, FORMS, TODAY, seed_documents

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 9, 15, 12, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=7)
# Values PostgreSQL must quote (comma, quote, CR, LF, CRLF), ones it must not (spaces at the
# ends, non-ASCII, a lone backslash), and a cell that is only a quote.
HOSTILE = ("a,b", 'say "hi"', "line\nbreak", "cr\rhere", "crlf\r\nend", '"', " padded ",
           "Ünïcödé ✓", "back\\slash", "x" * 200)
BASE_URLS = ("https://viewer.example.org/document",
             'https://viewer.example.org/d?a=1,2&q="x"')  # one the URL cell must quote


def nonce_stream(seed: bytes) -> Iterator[bytes]:
    """Deterministic stand-in bytes for os.urandom, so two ways of making the same tokens
    can be compared byte for byte (the real job uses the OS's CSPRNG)."""
    counter = 0
    while True:
        counter += 1
        yield from hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()


def fake_urandom(seed: bytes):  # type: ignore[no-untyped-def]
    stream = nonce_stream(seed)
    return lambda size: bytes(next(stream) for _ in range(size))


def recipe(rows: list[bytes], raw_key: bytes, prefix: bytes, suffix: bytes,
           urandom) -> bytes:  # type: ignore[no-untyped-def]
    """The documented format, one row at a time from a plain COPY (FORMAT csv) of the id and
    the four columns: the columns as PostgreSQL's COPY quoted them, then the URL cell: prefix,
    version || nonce || AES-256-GCM(id || expiry), suffix, CRLF."""
    aead = AESGCM(raw_key)
    expiry = int(EXPIRES.timestamp()).to_bytes(8, "big")
    out = [HEADER]
    for row in rows:
        document_id, columns = row.split(b",", 1)
        assert columns.endswith(b"\n")
        nonce = urandom(12)
        sealed = aead.encrypt(nonce, int(document_id).to_bytes(8, "big", signed=True) + expiry,
                              b"\x01")
        token = base64.urlsafe_b64encode(b"\x01" + nonce + sealed)
        out.append(columns[:-1] + b"," + prefix + token + suffix + b"\r\n")
    return b"".join(out)


def seed_hostile(url: str) -> dict[int, tuple[str, str, str, str]]:
    """Students and forms of HOSTILE values, ids of both signs up to bigint's limits, and
    enough filler for three batches; document id -> its four CSV cells."""
    expected = seed_documents(url, filler=2 * BATCH_ROWS + 7).expected
    dates = (ACTIVE[0].isoformat(), ACTIVE[1].isoformat())
    with psycopg.connect(url, autocommit=True) as conn:
        for number, value in enumerate(HOSTILE):
            conn.execute("INSERT INTO documents.students VALUES (%s, false)", (value,))
            for doc_id in (-(2**63) + number, 2**62 + number, -1 - number):
                conn.execute("INSERT INTO documents.documents (id, student_id, form,"
                             " start_date, end_date, complete) VALUES (%s, %s, %s, %s, %s,"
                             " true)", (doc_id, value, value, *ACTIVE))
                expected[doc_id] = (value, value, *dates)
        conn.execute("INSERT INTO documents.documents (id, student_id, form, start_date,"
                     " end_date, complete) VALUES (%s, 'S1', 'IEP', %s, %s, true)",
                     (2**63 - 1, *ACTIVE))
        expected[2**63 - 1] = ("S1", "IEP", *dates)
    return expected


def lines_settings(url: str, tmp_path: Path, base_url: str = BASE_URLS[0],
                   forms: tuple[str, ...] = FORMS) -> Settings:
    """A run's settings with a new key in tmp_path/key."""
    key = tmp_path / "key"
    key.write_text(tokens.generate_key() + "\n")
    prefix, suffix = url_cell(base_url)
    return Settings(docviewer=tmp_path, database_url=url, forms=forms, url_prefix=prefix,
                    url_suffix=suffix, issuer=TokenIssuer(read_keys(key), EXPIRES), keep=1,
                    now=NOW, today=TODAY)


# Settings that make PostgreSQL plan even these few rows in parallel, as it plans a real
# district's: the lines of a student must keep their order through the workers' sorts, the
# Gather Merge and the aggregate (force_parallel_mode is PostgreSQL 15's name).
PARALLEL = ("SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0",
            "SET min_parallel_table_scan_size = 0", "SET max_parallel_workers_per_gather = 2")


@pytest.mark.parametrize(("base_url", "parallel"), [(BASE_URLS[0], False),
                                                     (BASE_URLS[1], False),
                                                     (BASE_URLS[0], True)])
def test_batched_lines_are_the_per_row_recipe_byte_for_byte(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        base_url: str, parallel: bool) -> None:
    expected = seed_hostile(database_url)
    forms = (*FORMS, *HOSTILE)
    settings = lines_settings(database_url, tmp_path, base_url, forms)
    key = tmp_path / "key"
    keys = read_keys(key)
    with psycopg.connect(database_url) as conn:
        if parallel:
            conn.execute("ANALYZE documents.documents")
            for setting in PARALLEL:
                conn.execute(setting)
            plan = "\n".join(str(row[0]) for row in conn.execute(
                "EXPLAIN " + docviewer.export_query(conn.info.server_version).removeprefix(
                    "\nCOPY (").rpartition(") TO STDOUT")[0],
                {"forms": list(forms), "today": TODAY}))
            assert "Gather Merge" in plan and "Workers Planned" in plan, plan
        monkeypatch.setattr(tokens.os, "urandom", fake_urandom(b"same"))
        rows = write_documents(conn, settings, tmp_path / "documents.csv")
        with conn.cursor() as cur, cur.copy(docviewer.ROWS_QUERY,
                                            {"forms": list(forms), "today": TODAY}) as copy:
            copied = [bytes(row) for row in copy]
    assert rows == len(copied) == len(expected) > 2 * BATCH_ROWS
    written = (tmp_path / "documents.csv").read_bytes()
    raw_key = base64.urlsafe_b64decode(key.read_text().strip())
    assert written == recipe(copied, raw_key, settings.url_prefix, settings.url_suffix,
                             fake_urandom(b"same"))

    # Read back as any consumer would: every cell as it was stored, every token its document.
    reader = csv.reader(io.StringIO(written.decode("utf-8"), newline=""), strict=True)
    assert next(reader) == ["Student Id", "Form", "Start Date", "End Date", "URL"]
    unquoted_url = base_url + ("&" if "?" in base_url else "?") + "token="
    found = {}
    for student, form, start, end, url in reader:
        assert url.startswith(unquoted_url)
        said = decode_token(keys, url[len(unquoted_url):], NOW)
        assert said.expires_at == EXPIRES and said.document_id not in found
        found[said.document_id] = (student, form, start, end)
    assert found == expected


def test_postgresql_refuses_a_nul_so_no_cell_can_hold_one(database_url: str) -> None:
    """The lines are PostgreSQL's CSV with the URL appended: a NUL never reaches them
    because text cannot hold one (the export has no NUL case to quote or refuse)."""
    seed_documents(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn, \
            pytest.raises(psycopg.DataError):
        conn.execute("INSERT INTO documents.students VALUES (%s, false)", ("nul\x00here",))


def test_the_job_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    """The docviewer command's process start: psycopg, AES-GCM, the contract; never the
    server's, the operator's or other jobs' heavy modules."""
    program = ("import json, sys; from sftpd.cli import main; "
               f"code = main(['docviewer', '--root', {str(tmp_path / 'missing')!r}]); "
               "print(json.dumps([code, sorted(sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120, check=True, env={"PYTHONPATH": ":".join(sys.path)})
    code, modules = json.loads(proc.stdout.splitlines()[-1])
    assert code == 2  # bad usage, found once the command's module and options are loaded
    assert {"psycopg", "sftpd.downloads.docviewer", "sftpd.downloads.tokens"} <= set(modules)
    heavy = {"asyncssh", "prometheus_client", "psycopg_pool", "cryptography.x509",
             "cryptography.fernet", "kubernetes", "kopf", "yaml", "sftpd.server",
             "sftpd.epochs.command", "sftpd.formats"}
    assert set(modules) & heavy == set()


def cells(path: Path) -> dict[tuple[str, str, str, str], int]:
    """documents.csv's rows without their URLs, each with how often it occurs."""
    reader = csv.reader(io.StringIO(path.read_text("utf-8"), newline=""), strict=True)
    assert next(reader)[0] == "Student Id"
    counted: dict[tuple[str, str, str, str], int] = {}
    for student, form, start, end, _url in reader:
        counted[student, form, start, end] = counted.get((student, form, start, end), 0) + 1
    return counted


def test_the_lines_are_the_same_whatever_the_databases_settings(database_url: str,
                                                               tmp_path: Path) -> None:
    """A date style other than ISO, and string literals with backslash escapes (the setting
    of servers before 9.1): the same cells, dates in ISO."""
    seeded = seed_documents(database_url, filler=5)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for setting in ("datestyle = 'SQL, DMY'", "standard_conforming_strings = off"):
            conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET {setting}')
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT date '2026-09-01'::text").fetchone() == ("01/09/2026",)
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
        write_documents(conn, lines_settings(database_url, tmp_path), tmp_path / "d.csv")
    expected: dict[tuple[str, str, str, str], int] = {}
    for row in seeded.expected.values():
        expected[row] = expected.get(row, 0) + 1
    assert cells(tmp_path / "d.csv") == expected


def test_the_postgresql_16_query_writes_the_same_lines(database_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """From PostgreSQL 16 the aggregate says its ORDER BY (string_agg can be split between
    parallel workers there); here on an older server both forms run: the same bytes."""
    seed_hostile(database_url)
    settings = lines_settings(database_url, tmp_path)  # one key for both
    written = []
    for version in (150000, docviewer.PRESORTED_AGGREGATES):
        monkeypatch.setattr(tokens.os, "urandom", fake_urandom(b"same"))
        path = tmp_path / f"{version}.csv"
        with psycopg.connect(database_url) as conn:
            monkeypatch.setattr(conn.info.__class__, "server_version", property(
                lambda info, v=version: v))
            write_documents(conn, settings, path)
        written.append(path.read_bytes())
    assert "ORDER BY r.form" in docviewer.export_query(docviewer.PRESORTED_AGGREGATES)
    assert "ORDER BY r.form" not in docviewer.export_query(150000)
    assert written[0] == written[1] and written[0].count(b"\r\n") > 2 * BATCH_ROWS
