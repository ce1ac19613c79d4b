"""`sftpd docviewer` exporting N documents vs a raw `COPY (SELECT ...) TO STDOUT` of the same rows.

    python bench/docviewer_vs_copy.py [--documents 200000] [--database-url URL] [--repeat 3]
                                      [--candidates] [--before DIR]

Without --database-url a throwaway PostgreSQL server is started (district_devtools.postgres).
Every side runs against the same database in the same run, interleaved, best of N:

- raw COPY: one session in this process running a plain `COPY (SELECT id, student_id, form,
  start_date, end_date ...) TO STDOUT (FORMAT csv)` of the same rows (the export's WHERE and
  ORDER BY: sftpd.downloads.docviewer.ROWS_QUERY) into a file that is then fsynced;
- the same raw COPY in a Python process of its own that imports psycopg and nothing else,
  so that it pays for an interpreter and psycopg's import as the job does (the fair
  reference for a job that is a process of its own: docs/downloads.md, Benchmark);
- sftpd docviewer: the whole command (process start, contract check, the same COPY, a token
  per row, the URL column, fsync, COMPLETE, rename, prune), with the job's own wall and CPU
  time for writing documents.csv (its `docviewer.written` event) beside it;
- the tokens alone, made in this process in the job's batches, and Fernet tokens (the format
  the job used before) one per document, to show what a token per row costs;
- with --before DIR, the job again with DIR first on its PYTHONPATH (an older sftpd package,
  e.g. `git archive main sftpd | tar -x -C DIR`), interleaved with the rest: before and after
  in the same run;
- with --candidates, the design measured and not adopted: the whole CSV made by PostgreSQL,
  each token a standard Fernet token built with pgcrypto (docs/downloads.md, Benchmark).

Beside wall-clock time it prints CPU seconds: the client's (this process, or the child
process) and the server's (every process of the throwaway server; not with --database-url).
On a shared machine the wall clock follows the neighbours' load; the CPU work does not. The
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet
from epochs_vs_copy import server_cpu

from sftpd.downloads.contract import contract_sql
from sftpd.downloads.docviewer import BATCH_ROWS, ROWS_QUERY
from sftpd.downloads.tokens import TokenIssuer, generate_key, read_keys

NOW = "2026-09-15T12:00:00+00:00"
TODAY = date(2026, 9, 15)
FORMS = ["IEP", "504 Plan", "Prior Written Notice"]
BASE_URL = "https://viewer.example.org/document"
# Candidate (a): the same rows, each URL ending in a Fernet token made by pgcrypto: version
# 0x80, the timestamp, a random IV, AES-128-CBC with PKCS7, HMAC-SHA256, url-safe base64.
# Subqueries fenced with OFFSET 0 keep the random IV (and the ciphertext) computed once a row.
PGCRYPTO_QUERY = """
COPY (
  SELECT student_id AS "Student Id", form AS "Form", s AS "Start Date", e AS "End Date",
         %(prefix)s || replace(replace(replace(
             encode(body || hmac(body, %(sign)s, 'sha256'), 'base64'),
             E'\\n', ''), '+', '-'), '/', '_') AS "URL"
  FROM (
    SELECT student_id, form, s, e,
           %(head)s || iv || encrypt_iv(pt, %(enc)s, iv, 'aes-cbc/pad:pkcs') AS body
    FROM (
      SELECT d.student_id, d.form, to_char(d.start_date, 'YYYY-MM-DD') AS s,
             to_char(d.end_date, 'YYYY-MM-DD') AS e,
             convert_to('v1.' || d.id || %(suffix)s, 'SQL_ASCII') AS pt,
             gen_random_bytes(16) AS iv
      FROM documents.documents AS d
      WHERE d.complete AND NOT d.deleted
        AND d.form = ANY(%(forms)s)
        AND d.start_date <= %(today)s AND d.end_date >= %(today)s
        AND EXISTS (SELECT 1 FROM documents.students AS s
                    WHERE s.student_id = d.student_id AND NOT s.deleted)
      ORDER BY d.student_id, d.form, d.start_date, d.id
      OFFSET 0
    ) AS r OFFSET 0
  ) AS b
) TO STDOUT (FORMAT csv, HEADER)
"""


def client_cpu(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


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
            cur.copy(ROWS_QUERY, {"forms": FORMS, "today": TODAY}) as copy:
        for data in copy:
            out.write(data)
            rows += 1
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - started
    out_path.unlink()
    return elapsed, rows


# The raw COPY's own process imports psycopg and nothing else (not this script's imports):
# the least a Python program running the export's query pays to start.
RAW_COPY_PROGRAM = """
import os, sys, psycopg
url, query, out_path, forms, today = sys.argv[1:]
rows = 0
with psycopg.connect(url) as conn, open(out_path, "wb") as out, conn.cursor() as cur, \\
        cur.copy(query, {"forms": forms.split(","), "today": today}) as copy:
    for data in copy:
        out.write(data)
        rows += 1
    out.flush()
    os.fsync(out.fileno())
os.unlink(out_path)
print(rows)
"""


def raw_copy_process(url: str, out_path: Path) -> tuple[float, int]:
    """The raw COPY in a fresh interpreter importing only psycopg: its wall time from spawn
    to exit, its rows."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RAW_COPY_PROGRAM, url, ROWS_QUERY,
                           str(out_path), ",".join(FORMS), TODAY.isoformat()],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - started, int(proc.stdout)


def pgcrypto_fernet(url: str, out_path: Path, key: bytes) -> tuple[float, int]:
    """Candidate (a): PostgreSQL makes every line, this process only writes them (CRLF)."""
    raw = base64.urlsafe_b64decode(key)
    params = {"prefix": BASE_URL + "?token=", "sign": raw[:16], "enc": raw[16:],
              "head": b"\x80" + int(time.time()).to_bytes(8, "big"), "suffix": ".1790078400",
              "forms": FORMS, "today": TODAY}
    started = time.perf_counter()
    rows = -1  # the header line
    with psycopg.connect(url) as conn, out_path.open("wb", buffering=1 << 20) as out, \
            conn.cursor() as cur, cur.copy(PGCRYPTO_QUERY, params) as copy:
        write = out.write
        for data in copy:
            write(data[:-1])
            write(b"\r\n")
            rows += 1
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - started
    with out_path.open("rb") as handle:
        handle.readline()
        token = handle.readline().rstrip(b"\r\n").rpartition(b"token=")[2]
    Fernet(key).decrypt(token)  # a standard Fernet token, or this raises
    out_path.unlink()
    return elapsed, rows


def sftpd_docviewer(url: str, root: Path, key_file: Path, before: Path | None = None
                    ) -> tuple[float, int, float, float | None]:
    """The whole job's wall time, its rows, and its own wall and CPU time writing
    documents.csv (no CPU time from a job older than the writeCpuSeconds field); with
    `before`, the sftpd package found there first."""
    path = ([str(before)] if before is not None else []) + sys.path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sftpd", "docviewer", "--root", str(root), "--database-url", url,
         "--forms", ",".join(FORMS), "--base-url", BASE_URL,
         "--token-key-file", str(key_file), "--keep", "1", "--now", NOW],
        capture_output=True, text=True, check=False, env=env,
        cwd=root.parent)  # not a directory holding sftpd/: `-m` would look there first
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"sftpd docviewer failed: {proc.stdout}{proc.stderr}")
    epoch = max(p for p in (root / "downloads" / "docviewer").iterdir())
    with (epoch / "documents.csv").open("rb") as handle:
        rows = sum(1 for _ in handle) - 1  # no line breaks inside these fields
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    written = next(e for e in events if e["event"] == "docviewer.written")
    return elapsed, rows, written["writeSeconds"], written.get("writeCpuSeconds")


def tokens_alone(key_file: Path, documents: int) -> float:
    issuer = TokenIssuer(read_keys(key_file), datetime.now(UTC) + timedelta(days=7))
    ids = b"".join(i.to_bytes(8, "big") for i in range(BATCH_ROWS))
    started = time.perf_counter()
    for _ in range(0, documents, BATCH_ROWS):
        issuer.tokens(ids)
    return time.perf_counter() - started


def fernet_alone(documents: int) -> float:
    fernet = Fernet(Fernet.generate_key())
    started = time.perf_counter()
    for doc_id in range(documents):
        fernet.encrypt(b"v1.%d.1790078400" % doc_id)
    return time.perf_counter() - started


class Side:
    """One measured side: wall times, client CPU and server CPU of every run."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.walls: list[float] = []
        self.clients: list[float] = []
        self.servers: list[float | None] = []

    def run(self, data_dir: Path | None, body: Callable[[], float],
            who: int = resource.RUSAGE_SELF) -> None:
        server_before, client_before = server_cpu(data_dir), client_cpu(who)
        self.walls.append(body())
        self.clients.append(client_cpu(who) - client_before)
        server_after = server_cpu(data_dir)
        self.servers.append(None if server_before is None or server_after is None
                            else server_after - server_before)

    def cpu(self) -> float:
        """The least client plus the least server CPU seconds of the runs."""
        return min(self.clients) + min(s for s in self.servers if s is not None)

    def line(self, rows: int) -> str:
        best = min(self.walls)
        servers = [s for s in self.servers if s is not None]
        server = f"{min(servers):>8.2f}" if servers else f"{'-':>8}"
        client = f"{min(self.clients):>8.2f}" if self.clients else f"{'-':>8}"
        return (f"{self.label:<34}{best:>7.2f}  {' '.join(f'{w:.2f}' for w in self.walls):<20}"
                f"{rows / best:>10,.0f}  {client}{server}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--candidates", action="store_true",
                        help="also measure the designs not adopted (pgcrypto Fernet)")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also run the job with the sftpd package in DIR (an older one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="docviewer-bench-"))
    os.chmod(work, 0o755)  # the throwaway server runs as another user below it
    server = None
    try:
        url = args.database_url
        data_dir = None
        if url is None:
            from district_devtools.postgres import start_postgres

            server = start_postgres(work / "postgres")
            data_dir = server.data_dir
            url = server.create_database("bench")
        seed(url, args.documents)
        if args.candidates:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        key_file = work / "key"
        key_file.write_text(generate_key() + "\n")
        root = work / "district"
        root.mkdir()
        print(f"documents exported: {args.documents:,} (+{args.documents // 10:,} left out)")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        raw = Side("raw COPY (SELECT ...) TO file")
        raw_proc = Side("  the same, own Python process")
        job, write = Side("sftpd docviewer (whole job)"), Side("  its documents.csv write")
        tokens, fernet = Side("GCM tokens alone (batches)"), Side("Fernet tokens alone (before)")
        pgcrypto = Side("pgcrypto Fernet in the COPY (a)")
        job_before = Side("sftpd docviewer before (--before)")
        counts: dict[str, int] = {}
        job_writes: list[tuple[float, float | None]] = []

        def measured(name: str, result: tuple[float, int]) -> float:
            counts[name] = result[1]
            return result[0]

        def whole_job() -> float:
            elapsed, counts["sftpd"], *write = sftpd_docviewer(url, root, key_file)
            job_writes.append((write[0], write[1]))
            return elapsed

        def whole_job_before() -> float:
            elapsed, counts["sftpd before"], *_ = sftpd_docviewer(url, root, key_file,
                                                                  args.before)
            return elapsed

        for _ in range(args.repeat):
            raw.run(data_dir, lambda: measured("raw", raw_copy(url, work / "raw.csv")))
            raw_proc.run(data_dir, lambda: measured("raw process",
                                                     raw_copy_process(url, work / "raw.csv")),
                         resource.RUSAGE_CHILDREN)
            job.run(data_dir, whole_job, resource.RUSAGE_CHILDREN)
            write_wall, write_cpu = job_writes[-1]  # the job's own figures (its event)
            write.walls.append(write_wall)
            if write_cpu is not None:
                write.clients.append(write_cpu)
            tokens.run(None, lambda: tokens_alone(key_file, args.documents))
            fernet.run(None, lambda: fernet_alone(args.documents))
            if args.before is not None:
                job_before.run(data_dir, whole_job_before, resource.RUSAGE_CHILDREN)
            if args.candidates:
                pgcrypto.run(data_dir, lambda: measured("pgcrypto", pgcrypto_fernet(
                    url, work / "pgcrypto.csv", key_file.read_bytes().strip())))
            if set(counts.values()) != {args.documents}:
                raise SystemExit(f"row counts differ: {counts}")
        print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'':<34}{'best s':>7}  {'all runs (s)':<20}{'rows/s':>10}  "
              f"{'client':>8}{'server':>8}  (CPU s, least of the runs)")
        sides = ([raw, raw_proc, job, write] + ([job_before] if args.before else [])
                 + [tokens, fernet] + ([pgcrypto] if args.candidates else []))
        for side in sides:
            print(side.line(args.documents))
        ratios = [("documents.csv write / raw COPY", min(raw.walls) / min(write.walls)),
                  ("whole job / raw COPY in its own process",
                   min(raw_proc.walls) / min(job.walls)),
                  ("whole job / raw COPY", min(raw.walls) / min(job.walls))]
        if args.candidates:
            ratios.append(("pgcrypto Fernet (a) / raw COPY", min(raw.walls) / min(pgcrypto.walls)))
        if data_dir is not None:  # the less load-dependent figure: CPU work, client and server
            ratios.append(("CPU: whole job / raw COPY in its own process",
                           raw_proc.cpu() / job.cpu()))
        # The server runs the same query for both: the clients' CPU is what the job adds.
        ratios.append(("client CPU: whole job / raw COPY, own process",
                       min(raw_proc.clients) / min(job.clients)))
        if args.before is not None:
            ratios += [("whole job before / raw COPY in its own process",
                        min(raw_proc.walls) / min(job_before.walls)),
                       ("client CPU: job before / raw COPY, own process",
                        min(raw_proc.clients) / min(job_before.clients))]
        print("throughput ratios (target >= 0.80x):")
        for label, ratio in ratios:
            print(f"  {label:<50}{ratio:.2f}x")
        # Best of N favours whichever side the neighbours' load spared once; the medians too.
        print(f"  {'the same, medians of the runs':<50}"
              f"{statistics.median(raw_proc.walls) / statistics.median(job.walls):.2f}x"
              "  (whole job / raw COPY in its own process)")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
