"""`sftpd docviewer` exporting N documents vs a raw `COPY (SELECT ...) TO STDOUT` of the same rows.

    python bench/docviewer_vs_copy.py [--documents 200000] [--database-url URL] [--repeat 3]

Without --database-url a throwaway PostgreSQL server is started (district_devtools.postgres).
Both sides run against the same database in the same run, interleaved, best of N: the raw side
is one session running the export's own query (same WHERE, same ORDER BY) as
`COPY ... TO STDOUT (FORMAT csv)` into a file that is then fsynced; the sftpd side is the whole
command (process start, contract check, the same COPY, a Fernet token per row, the URL column,
fsync, COMPLETE, rename, prune), with the job's own time for writing documents.csv (from its
log) beside it. A last figure is the Fernet tokens alone, made in this
process for as many documents, to show what the token per row costs. The load average is
printed before and after: on a shared machine the wall clock follows the neighbours' load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet

from sftpd.downloads.contract import contract_sql
from sftpd.downloads.docviewer import EXPORT_QUERY
from sftpd.downloads.tokens import TokenIssuer

NOW = "2026-09-15T12:00:00+00:00"
TODAY = date(2026, 9, 15)
FORMS = ["IEP", "504 Plan", "Prior Written Notice"]


def seed(url: str, documents: int) -> None:
    """`documents` exported documents, plus a tenth more that the query must leave out."""
    students = max(documents // 10, 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(contract_sql().encode())
        conn.execute("INSERT INTO documents.students SELECT 'S' || g, g %% 97 = 0"
                     " FROM generate_series(1, %s) AS g", (students,))
        # Exported: complete, active, chosen form, student not deleted (g %% 97 <> 0).
        conn.execute("""
            INSERT INTO documents.documents (student_id, form, start_date, end_date, complete)
            SELECT 'S' || s, (ARRAY['IEP', '504 Plan', 'Prior Written Notice'])[1 + g %% 3],
                   date '2026-09-01' - (g %% 300), date '2027-06-30' + (g %% 200), true
            FROM (SELECT g, 1 + (g * 7919) %% %(students)s AS s
                  FROM generate_series(1, %(n)s * 2) AS g) AS p
            WHERE s %% 97 <> 0
            LIMIT %(n)s
        """, {"students": students, "n": documents})
        conn.execute("""
            INSERT INTO documents.documents (student_id, form, start_date, end_date, complete)
            SELECT 'S' || (1 + g %% %(students)s), CASE WHEN g %% 2 = 0 THEN 'ETR' ELSE 'IEP' END,
                   date '2025-09-01', date '2026-06-30' + (g %% 2) * 400, g %% 2 = 0
            FROM generate_series(1, %(extra)s) AS g
        """, {"students": students, "extra": documents // 10})
        conn.execute("VACUUM ANALYZE documents.documents")
        conn.execute("VACUUM ANALYZE documents.students")


def raw_copy(url: str, out_path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    rows = 0
    with psycopg.connect(url) as conn, out_path.open("wb") as out, conn.cursor() as cur, \
            cur.copy(EXPORT_QUERY, {"forms": FORMS, "today": TODAY}) as copy:
        for data in copy:
            out.write(data)
            rows += 1
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - started
    out_path.unlink()
    return elapsed, rows


def sftpd_docviewer(url: str, root: Path, key_file: Path) -> tuple[float, int, float]:
    """The whole job's wall time, its rows, and its own time writing documents.csv."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sftpd", "docviewer", "--root", str(root), "--database-url", url,
         "--forms", ",".join(FORMS), "--base-url", "https://viewer.example.org/document",
         "--token-key-file", str(key_file), "--keep", "1", "--now", NOW],
        capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"sftpd docviewer failed: {proc.stdout}{proc.stderr}")
    epoch = max(p for p in (root / "downloads" / "docviewer").iterdir())
    with (epoch / "documents.csv").open("rb") as handle:
        rows = sum(1 for _ in handle) - 1  # no line breaks inside these fields
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    write_seconds = next(e["writeSeconds"] for e in events if e["event"] == "docviewer.written")
    return elapsed, rows, write_seconds


def tokens_alone(documents: int) -> float:
    issuer = TokenIssuer([Fernet(Fernet.generate_key())],
                         datetime.now(UTC) + timedelta(days=7))
    started = time.perf_counter()
    for doc_id in range(documents):
        issuer.token(doc_id)
    return time.perf_counter() - started


def fmt(runs: list[float], rows: int) -> str:
    best = min(runs)
    return (f"{best:>7.2f}  {' '.join(f'{r:.2f}' for r in runs):<24}"
            f"{rows / best:>12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="docviewer-bench-"))
    os.chmod(work, 0o755)  # the throwaway server runs as another user below it
    server = None
    try:
        url = args.database_url
        if url is None:
            from district_devtools.postgres import start_postgres

            server = start_postgres(work / "postgres")
            url = server.create_database("bench")
        seed(url, args.documents)
        key_file = work / "key"
        key_file.write_bytes(Fernet.generate_key())
        root = work / "district"
        root.mkdir()
        print(f"documents exported: {args.documents:,} (+{args.documents // 10:,} left out)")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        raws: list[float] = []
        ours: list[float] = []
        writes: list[float] = []
        tokens: list[float] = []
        for _ in range(args.repeat):
            elapsed, raw_rows = raw_copy(url, work / "raw.csv")
            raws.append(elapsed)
            elapsed, our_rows, write_seconds = sftpd_docviewer(url, root, key_file)
            ours.append(elapsed)
            writes.append(write_seconds)
            tokens.append(tokens_alone(args.documents))
            if raw_rows != our_rows or our_rows != args.documents:
                raise SystemExit(f"row counts differ: raw {raw_rows}, sftpd {our_rows}")
        print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'':<30}{'best s':>7}  {'all runs (s)':<24}{'rows/s':>12}")
        print(f"{'raw COPY (SELECT ...) TO file':<30}{fmt(raws, args.documents)}")
        print(f"{'sftpd docviewer (whole job)':<30}{fmt(ours, args.documents)}")
        print(f"{'  its documents.csv write':<30}{fmt(writes, args.documents)}")
        print(f"{'Fernet tokens alone':<30}{fmt(tokens, args.documents)}")
        ratio = min(raws) / min(ours)
        print(f"throughput ratio (sftpd / raw COPY): {ratio:.2f}x (target >= 0.80x)")
        print(f"tokens' share of the write: {min(tokens) / min(writes):.0%}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
