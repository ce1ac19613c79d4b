"""Import a generated Generic CSV API load (students plus guardians) with `sftpd process-epochs`
vs a raw COPY of the same CSVs.

    python bench/generic_csv_vs_copy.py [--students 1000000] [--database-url URL] [--repeat 3]

The load: N students (every column of students.csv, the four date forms, every Gender
spelling, quoted addresses with commas) and 1.5 guardians per student. The raw side COPYs
both files into fresh plain tables of text columns (no keys, no checks; one session, one
transaction). The sftpd side is the whole command on a tree holding the load as one epoch with
its COMPLETE (process start, digest, recognition, header checks, COPY into staging, value
checks, the typed students table with its key, guardians replaced per student, ledger,
processing.log, move), into an empty database each time: a district's first load, which takes
the fast path of sftpd/formats/generic_csv/firstload.py (typed COPY straight into the tables,
value checks in a second session at the same time).

Like bench/epochs_vs_copy.py (whose helpers it uses) it prints the CPU seconds the throwaway
server spent on each side beside the wall clock, and the load average before and after.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from epochs_vs_copy import row, server_cpu, spent
from psycopg import sql

from sftpd import tree
from sftpd.formats.generic_csv.spec import GUARDIANS, STUDENTS

FILES = (STUDENTS, GUARDIANS)
_DATES = ("{m:02d}/{d:02d}/{y}", "{m:02d}-{d:02d}-{y}", "{y}/{m:02d}/{d:02d}",
          "{y}-{m:02d}-{d:02d}")
_GENDERS = ("M", "F", "m", "f", "male", "female", "Male", "Female")
_ENROLLMENT = ("ENROLLED",) * 6 + ("PRE_ENROLLED", "WITHDREW", "TRANSFERRED", "GRADUATED")


def generate(folder: Path, students: int) -> dict[str, int]:
    folder.mkdir(parents=True)
    with (folder / STUDENTS.file).open("w", newline="") as out:
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow([c.name for c in STUDENTS.columns])
        for s in range(students):
            date = _DATES[s % 4].format(y=2008 + s % 12, m=1 + s % 12, d=1 + s % 28)
            school = s % 40
            w.writerow([f"S{s:08d}", f"Family{s}", "" if s % 3 else f"M{s}", f"Given{s}", date,
                        _GENDERS[s % 8], _ENROLLMENT[s % 10], f"{s % 13:02d}",
                        f"{s % 9000} Main Street, Apt {s % 40}", "Applegrove", "OH",
                        f"43{s % 1000:03d}", "White", "Applegrove City", "Franklin",
                        "Applegrove City", f"R{s}", f"School {school}", f"{10000 + school:06d}",
                        f"SIS{s}"])
    guardians = 0
    with (folder / GUARDIANS.file).open("w", newline="") as out:
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow([c.name for c in GUARDIANS.columns])
        for s in range(students):
            for g in range(1 + s % 2):
                w.writerow([f"S{s:08d}", f"Family{s}", f"Parent{g}", "Mother" if g else "Father",
                            f"p{s}.{g}@example.org", f"614-555-{s % 10000:04d}",
                            f"{s % 9000} Main Street, Apt {s % 40}", "Applegrove", "OH",
                            f"43{s % 1000:03d}", "en" if s % 5 else "es"])
                guardians += 1
    return {"students": students, "guardians": guardians}


def raw_copy(url: str, folder: Path, data_dir: Path | None) -> tuple[float, float | None]:
    """COPY both CSVs into fresh plain tables of text columns; seconds taken, server CPU."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS rawcopy CASCADE")
        conn.execute("CREATE SCHEMA rawcopy")
        cpu = server_cpu(data_dir)
        start = time.perf_counter()
        with conn.transaction():
            for spec in FILES:
                table = sql.Identifier("rawcopy", spec.name)
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(
                    sql.SQL("{} text").format(sql.Identifier(c.sql_name))
                    for c in spec.columns)))
                with conn.cursor() as cur, cur.copy(sql.SQL(
                        "COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(table)) as copy, \
                        (folder / spec.file).open("rb") as data:
                    while chunk := data.read(1 << 20):
                        copy.write(chunk)
        elapsed = time.perf_counter() - start
    return elapsed, spent(cpu, data_dir)


def sftpd_import(url: str, folder: Path, work: Path,
                 data_dir: Path | None) -> tuple[float, float | None]:
    """`sftpd process-epochs` on a tree holding the load as one epoch; seconds, server CPU."""
    root = work / "district"
    shutil.rmtree(root, ignore_errors=True)
    tree.ensure_tree(root)
    epoch = root / tree.UPLOAD / "20261128-020000"
    shutil.copytree(folder, epoch)
    (epoch / "COMPLETE").write_bytes(b"")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS generic_csv CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS sftpd CASCADE")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cpu = server_cpu(data_dir)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sftpd", "process-epochs", "--root", str(root),
                           "--database-url", url, "--result-file", str(work / "result.json"),
                           "--formats", "generic-csv"],
                          env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or '"Succeeded' not in (work / "result.json").read_text():
        sys.exit(f"process-epochs failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return elapsed, spent(cpu, data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="generic-csv-bench-"))
    os.chmod(work, 0o755)  # the throwaway server runs as another user below it
    server = None
    try:
        url = args.database_url
        data_dir = None
        if url is None:
            from district_devtools.postgres import start_postgres

            server = start_postgres(work / "postgres")
            url = server.create_database("bench")
            data_dir = server.data_dir
            server.psql("ALTER SYSTEM SET autovacuum = off")
            server.psql("SELECT pg_reload_conf()")
        folder = work / "load"
        counts = generate(folder, args.students)
        rows = sum(counts.values())
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"load: {rows:,} rows ({', '.join(f'{k} {v:,}' for k, v in counts.items())}), "
              f"{size / 1e6:.1f} MB")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        raws: list[tuple[float, float | None]] = []
        ours: list[tuple[float, float | None]] = []
        for _ in range(args.repeat):  # interleaved: both sides under the same conditions
            raws.append(raw_copy(url, folder, data_dir))
            ours.append(sftpd_import(url, folder, work, data_dir))
        print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'':<26}{'best s':>7}  {'all runs (s)':<32}{'rows/s':>11}{'server CPU s':>13}")
        print(row("raw COPY (plain tables)", [w for w, _ in raws], [c for _, c in raws], rows))
        print(row("sftpd process-epochs", [w for w, _ in ours], [c for _, c in ours], rows))
        raw, our = min(w for w, _ in raws), min(w for w, _ in ours)
        print(f"throughput ratio (sftpd / raw COPY): {raw / our:.2f}x (target >= 0.70x)")
        if data_dir is not None:
            raw_cpu = min(c for _, c in raws if c is not None)
            our_cpu = min(c for _, c in ours if c is not None)
            print(f"server CPU ratio (raw COPY / sftpd): {raw_cpu / our_cpu:.2f}x")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
