"""Benchmark: `sftpd backup` against a plain `pg_dump -Fc -f FILE` of the same database.

Starts a throwaway PostgreSQL server (or uses --database-url), fills a database to --size GB
with generate_series into a few tables, then alternately times the real `sftpd backup`
command line (dump, fsync, pg_restore --list, sha256, publish, rotate) and a plain pg_dump of
the same client version to a file, and prints them side by side. Target: at most 1.1x.

    python bench/backup_vs_pg_dump.py                  # 1 GB, 2 rounds
    python bench/backup_vs_pg_dump.py --size 0.05 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from district_devtools.postgres import start_postgres

from sftpd.backup.pgclient import (
    Connection,
    candidate_bin_dirs,
    choose_client,
    installed_clients,
    probe_server_major,
)

# Rows per table for 1 GB of heap; the payloads make the data compress about as well as
# district records do (repeated words and digests, not zeros).
ROWS_PER_GB = {"students": 2_000_000, "events": 4_000_000, "scores": 6_000_000}


def fill(url: str, size_gb: float) -> int:
    """Create the tables at the wanted size; return the database size in bytes."""
    scale = {table: max(1000, int(rows * size_gb)) for table, rows in ROWS_PER_GB.items()}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS students, events, scores")
        conn.execute("CREATE TABLE students (id bigint PRIMARY KEY, given_name text, "
                     "family_name text, email text, born date, profile jsonb)")
        conn.execute("CREATE TABLE events (id bigint, student_id bigint, at timestamptz, "
                     "kind text, detail text)")
        conn.execute("CREATE TABLE scores (student_id bigint, course text, term int, "
                     "score numeric(5, 2), digest text)")
        conn.execute(
            "INSERT INTO students SELECT g, 'Given' || (g %% 5000), 'Family' || (g %% 20000), "
            "'s' || g || '@lincoln.k12.example', date '2008-01-01' + (g %% 3650), "
            "jsonb_build_object('grade', g %% 12, 'iep', g %% 7 = 0, 'code', md5(g::text)) "
            "FROM generate_series(1, %s) g", (scale["students"],))
        conn.execute(
            "INSERT INTO events SELECT g, g %% %s, timestamptz '2025-08-20' + g * interval '7 s', "
            "(ARRAY['login','upload','meeting','note'])[1 + g %% 4], "
            "'event ' || md5(g::text) || ' for student ' || (g %% 100000) "
            "FROM generate_series(1, %s) g", (scale["students"], scale["events"]))
        conn.execute(
            "INSERT INTO scores SELECT g %% %s, 'COURSE-' || (g %% 400), 2020 + g %% 6, "
            "(g %% 10000) / 100.0, left(md5(g::text), 12) "
            "FROM generate_series(1, %s) g", (scale["students"], scale["scores"]))
        conn.execute("VACUUM ANALYZE")
        size: int = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return size


def time_sftpd_backup(url: str, root: Path) -> tuple[float, float, int]:
    """Wall time of the whole command, the part of it pg_dump took, and the archive size."""
    result_file = root.parent / "backup-result.json"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sftpd", "backup", "--root", str(root),
                          "--database-url", url, "--keep-backups", "1", "--district", "bench",
                          "--result-file", str(result_file)],
                         check=True, stdout=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    result = json.loads(result_file.read_text())
    assert result["outcome"] == "Succeeded", result
    events = [json.loads(line) for line in out.stdout.splitlines()]
    dumped = next(e for e in events if e["event"] == "backup.dumped")
    return elapsed, float(dumped["dumpSeconds"]), int(result["bytes"])


def time_plain_pg_dump(pg_dump: Path, url: str, target: Path) -> tuple[float, int]:
    target.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run([str(pg_dump), "-Fc", "-f", str(target), f"--dbname={url}"], check=True)
    elapsed = time.perf_counter() - start
    size = target.stat().st_size
    target.unlink()
    return elapsed, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1.0, help="database size in GB (1.0)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--database-url", help="use this database (its tables are replaced) "
                                               "instead of a throwaway server")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backup-bench-", dir=args.workdir))
    work.chmod(0o755)  # the server runs as the postgres user and must reach its directory
    server = None
    try:
        url = args.database_url
        if url is None:
            server = start_postgres(work / "pg")
            url = server.create_database("bench")
        started = time.perf_counter()
        db_bytes = fill(url, args.size)
        filled = time.perf_counter() - started
        print(f"database: {db_bytes / 1e9:.2f} GB (filled in {filled:.0f} s)", flush=True)
        connection = Connection.from_url(url)
        tools = choose_client(probe_server_major(connection),
                              installed_clients(candidate_bin_dirs(None)))
        root = work / "volume"
        root.mkdir()
        ours: list[float] = []
        overheads: list[float] = []
        theirs: list[float] = []
        archive = 0
        for round_number in range(args.repeat):
            order = ["plain", "ours"] if round_number % 2 == 0 else ["ours", "plain"]
            for which in order:
                if which == "ours":
                    seconds, dump_seconds, archive = time_sftpd_backup(url, root)
                    ours.append(seconds)
                    overheads.append(seconds - dump_seconds)
                else:
                    seconds, _ = time_plain_pg_dump(tools.pg_dump, url, work / "plain.dump")
                    theirs.append(seconds)
                print(f"  round {round_number + 1} {which}: {seconds:.1f} s", flush=True)
        mine, ref = statistics.median(ours), statistics.median(theirs)
        print(f"pg_dump {tools.major} ({tools.pg_dump}); archive {archive / 1e6:.0f} MB; "
              f"{args.repeat} rounds (median)")
        print(f"{'':14}{'sftpd backup':>14}{'pg_dump -Fc':>14}{'ratio':>8}")
        print(f"{'seconds':14}{mine:>14.1f}{ref:>14.1f}{mine / ref:>7.2f}x  (target <= 1.10x)")
        print(f"{'fastest':14}{min(ours):>14.1f}{min(theirs):>14.1f}"
              f"{min(ours) / min(theirs):>7.2f}x")
        print(f"{'MB/s of db':14}{db_bytes / 1e6 / mine:>14.1f}{db_bytes / 1e6 / ref:>14.1f}")
        # pg_dump's own time varies with the machine's load far more than the job's additions;
        # this is what the job adds on top of its pg_dump (start-up, probe, fsync, verify, hash).
        added = statistics.median(overheads)
        print(f"added by sftpd backup beyond its pg_dump: {added:.1f} s median "
              f"({added / ref:.1%} of a plain pg_dump); all rounds: "
              f"ours {[round(t, 1) for t in ours]}, plain {[round(t, 1) for t in theirs]}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
