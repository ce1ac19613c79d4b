"""`sftpd process-epochs` importing a prior-system PDF archive vs a raw load of the same PDFs.

    python bench/prior_system_pdfs_vs_copy.py [--pdfs 2000] [--kib 100] [--database-url URL]
                                              [--repeat 3]

Without --database-url a throwaway PostgreSQL server is started (district_devtools.postgres).
The archive is a stored zip of `--pdfs` structurally valid PDFs of about `--kib` KiB each
(random stream bytes: real PDFs compress little) for a fifth as many students, laid out as
`<domain>/students/<student id>/<n>.pdf`. Both sides run in the same run, interleaved, best of
N, against the same database:

- raw: one session reads every member from the zip and loads it with a binary `COPY
  documents.documents (...) FROM STDIN (FORMAT BINARY)` in one transaction, then copies the
  zip to a file and fsyncs it (what the publication writes); no checks at all;
- sftpd: the whole command on an epoch holding the zip (process start, digest, recognition,
  every member's checks and PDF structure, the students query, the inserts and ledger in one
  transaction, the zip and its .sha256 published with fsyncs and renames, logs, move).

Between runs the documents, the ledger and the published files are removed and the epoch moved
back. The load average is printed before and after: on a shared machine the wall clock follows
the neighbours' load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path

import psycopg

from sftpd.downloads.contract import contract_sql

DOMAIN = "bench.k12.us"
EPOCH = "20261201-010000"
NOW = "2100-01-01T00:00:00Z"
DAY = date(2026, 12, 1)


def make_pdf(size: int) -> bytes:
    """A one-page PDF whose content stream holds about `size` random bytes, offsets right."""
    payload = os.urandom(size)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(payload), payload),
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


def build(url: str, root: Path, pdfs: int, kib: int) -> tuple[Path, int]:
    """The students in the database, the zip in upload/<EPOCH>/; the zip and its bytes."""
    students = max(pdfs // 5, 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(contract_sql().encode())
        conn.execute("INSERT INTO documents.students SELECT 'S' || g, false"
                     " FROM generate_series(1, %s) AS g", (students,))
    epoch = root / "upload" / EPOCH
    epoch.mkdir(parents=True)
    path = epoch / "prior.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for n in range(pdfs):
            archive.writestr(f"{DOMAIN}/students/S{1 + n % students}/{n}.pdf",
                             make_pdf(kib * 1024))
    (epoch / "COMPLETE").touch()
    return path, path.stat().st_size


def reset(url: str, root: Path) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE documents.documents")
        conn.execute("DROP SCHEMA IF EXISTS sftpd CASCADE")
    for entry in (root / "downloads").iterdir():
        if entry.is_file():
            entry.unlink()
    done = root / "upload-processed" / EPOCH
    if done.exists():
        for log in ("processing.log", "processing.json"):
            (done / log).unlink()
        done.rename(root / "upload" / EPOCH)


def raw_load(url: str, archive_path: Path, target: Path) -> float:
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur, \
            zipfile.ZipFile(archive_path) as archive:
        with cur.copy("COPY documents.documents (student_id, form, start_date, end_date, "
                      "complete, file_name, pdf) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "date", "date", "bool", "text", "bytea"])
            for info in archive.infolist():
                _, _, student, name = info.filename.split("/")
                copy.write_row((student, "Prior System", DAY, DAY, True, name,
                                archive.read(info)))
        conn.commit()
    with archive_path.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def sftpd_import(url: str, root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sftpd", "process-epochs", "--root", str(root),
         "--database-url", url, "--district-domain", DOMAIN, "--formats", "prior-system-pdfs",
         "--now", NOW], capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or not (root / "downloads" / "prior.zip").exists():
        raise SystemExit(f"sftpd process-epochs failed: {proc.stdout}{proc.stderr}")
    return elapsed


def fmt(runs: list[float], megabytes: float) -> str:
    best = min(runs)
    return f"{best:>7.2f}  {' '.join(f'{r:.2f}' for r in runs):<24}{megabytes / best:>10,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdfs", type=int, default=2000)
    parser.add_argument("--kib", type=int, default=100)
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prior-bench-"))
    os.chmod(work, 0o755)  # the throwaway server runs as another user below it
    server = None
    try:
        url = args.database_url
        if url is None:
            from district_devtools.postgres import start_postgres

            server = start_postgres(work / "postgres")
            url = server.create_database("bench")
        root = work / "district"
        for sub in ("upload", "upload-processed", "downloads"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        archive_path, size = build(url, root, args.pdfs, args.kib)
        megabytes = size / 1e6
        print(f"archive: {args.pdfs:,} PDFs, {megabytes:,.0f} MB (stored zip)")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        raws: list[float] = []
        ours: list[float] = []
        for _ in range(args.repeat):
            reset(url, root)
            raws.append(raw_load(url, archive_path, work / "copy.zip"))
            reset(url, root)
            ours.append(sftpd_import(url, root))
        print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'':<34}{'best s':>7}  {'all runs (s)':<24}{'MB/s':>10}")
        print(f"{'raw COPY of the PDFs + zip copy':<34}{fmt(raws, megabytes)}")
        print(f"{'sftpd process-epochs (whole job)':<34}{fmt(ours, megabytes)}")
        print(f"throughput ratio (sftpd / raw): {min(raws) / min(ours):.2f}x")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
