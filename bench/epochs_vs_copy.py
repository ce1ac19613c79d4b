"""Import a generated OneRoster set with `sftpd process-epochs` vs a raw COPY of the same CSVs.

    python bench/epochs_vs_copy.py [--enrollments 1000000] [--database-url URL] [--repeat 3]

Without --database-url a throwaway PostgreSQL server is started (district_operator's
localcluster). Both sides run against the same server: the raw side COPYs each CSV into a
plain table of text columns (no keys, no checks; one session); the sftpd side is the whole
command (process start, recognize, digest, header checks, the load into the typed tables with
primary keys, value/duplicate/reference checks, ledger, processing.log, move). The set is all
bulk, so the import takes the bulk fast path (docs/epochs.md): typed COPY straight into the
tables while a second session checks the values.

Besides wall-clock time it prints the CPU seconds the server spent on each side (every process
of the throwaway server, backends that exited included; not available with --database-url):
on a shared machine the wall clock follows the neighbours' load, the CPU work does not.
Autovacuum is turned off on the throwaway server so that the cleanup after one run does not
land in the next one's figures. The load average is printed before and after.
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
from psycopg import sql

from sftpd import tree
from sftpd.formats.oneroster.spec import tables_for

TICK = os.sysconf("SC_CLK_TCK")

FILES = ("academicSessions", "orgs", "courses", "classes", "users", "enrollments")


def generate(folder: Path, enrollments: int) -> dict[str, int]:
    """A consistent OneRoster 1.1 bulk set: every enrollment points at real rows."""
    folder.mkdir(parents=True)
    users, classes, courses, schools = enrollments // 10, enrollments // 50, 2000, 50
    spec = tables_for("1.1")
    counts: dict[str, int] = {}

    def write(name: str, rows: object) -> None:
        with (folder / f"{name}.csv").open("w", newline="") as out:
            w = csv.writer(out, lineterminator="\n")
            w.writerow([c.name for c in spec[name].columns])
            n = 0
            for row in rows:  # type: ignore[attr-defined]
                w.writerow(row)
                n += 1
            counts[name] = n

    write("academicSessions", [["as-1", "", "", "2026-2027", "schoolYear", "2026-08-15",
                                "2027-06-15", "", "2027"]])
    write("orgs", [["org-d", "", "", "District", "district", "D", ""]]
          + [[f"org-{s}", "", "", f"School {s}", "school", f"S{s}", "org-d"]
             for s in range(schools)])
    write("courses", ([f"c-{c}", "", "", "as-1", f"Course {c}", f"C{c}", "09,10",
                       f"org-{c % schools}", "Math", ""] for c in range(courses)))
    write("classes", ([f"cl-{k}", "", "", f"Class {k}", "09", f"c-{k % courses}", f"K{k}",
                       "scheduled", f"Room {k % 300}", f"org-{k % courses % schools}", "as-1",
                       "Math", "", "1"] for k in range(classes)))
    write("users", ([f"u-{u}", "", "", "true", f"org-{u % schools}",
                     "teacher" if u % 40 == 0 else "student", f"user{u}", "", f"Given{u}",
                     f"Family{u}", "", f"ID{u}", f"user{u}@district.example", "", "", "",
                     "09", ""] for u in range(users)))

    def enrollment_rows() -> object:
        for e in range(enrollments):
            k = e % classes
            yield [f"e-{e}", "", "", f"cl-{k}", f"org-{k % courses % schools}",
                   f"u-{(e * 7919) % users}", "student", "false", "2026-08-15", "2027-06-15"]

    write("enrollments", enrollment_rows())
    with (folder / "manifest.csv").open("w") as out:
        out.write("propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\n")
        out.writelines(f"file.{name},bulk\n" for name in FILES)
        out.writelines(f"file.{name},absent\n" for name in ("demographics", "categories",
                                                           "lineItems", "results"))
    return counts


def server_cpu(data_dir: Path | None) -> float | None:
    """CPU seconds used so far by the server's processes: the postmaster, its live children,
    and (through the postmaster's cutime/cstime) the children it has already reaped."""
    if data_dir is None:
        return None
    time.sleep(0.5)  # let backends of closed connections exit and be reaped

    def fields(pid: int | str) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    ticks = sum(int(f) for f in fields(postmaster)[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = fields(entry.name)
        except OSError:
            continue
        if int(stat[1]) == postmaster:
            ticks += sum(int(f) for f in stat[11:15])
    return ticks / TICK


def row(label: str, times: list[float], cpus: list[float | None], rows: int) -> str:
    best = min(times)
    cpu = (f"{min(c for c in cpus if c is not None):.2f}" if all(c is not None for c in cpus)
           else "n/a")
    runs = " ".join(f"{t:.2f}" for t in times)
    return f"{label:<26}{best:>7.2f}  {runs:<32}{rows / best:>11,.0f}{cpu:>13}"


def spent(before: float | None, data_dir: Path | None) -> float | None:
    after = server_cpu(data_dir)
    return None if before is None or after is None else after - before


def raw_copy(url: str, folder: Path, data_dir: Path | None) -> tuple[float, float | None]:
    """COPY every CSV into a fresh plain table of text columns; seconds taken, server CPU."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS rawcopy CASCADE")
        conn.execute("CREATE SCHEMA rawcopy")
        cpu = server_cpu(data_dir)
        start = time.perf_counter()
        with conn.transaction():
            for name in FILES:
                with (folder / f"{name}.csv").open() as f:
                    header = next(csv.reader(f))
                table = sql.Identifier("rawcopy", name.lower())
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(
                    sql.SQL("{} text").format(sql.Identifier(h)) for h in header)))
                with conn.cursor() as cur, cur.copy(sql.SQL(
                        "COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(table)) as copy, \
                        (folder / f"{name}.csv").open("rb") as data:
                    while chunk := data.read(1 << 20):
                        copy.write(chunk)
        elapsed = time.perf_counter() - start
    return elapsed, spent(cpu, data_dir)


def sftpd_import(url: str, folder: Path, work: Path,
                 data_dir: Path | None) -> tuple[float, float | None]:
    """`sftpd process-epochs` on a tree holding the set as one epoch; seconds taken, server
    CPU."""
    root = work / "district"
    shutil.rmtree(root, ignore_errors=True)
    tree.ensure_tree(root)
    shutil.copytree(folder, root / tree.UPLOAD / "2026-11-28T020000Z")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS oneroster CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS sftpd CASCADE")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cpu = server_cpu(data_dir)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sftpd", "process-epochs", "--root", str(root),
                           "--database-url", url, "--now", "2100-01-01T00:00:00Z",
                           "--result-file", str(work / "result.json")],
                          env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"process-epochs failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return elapsed, spent(cpu, data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enrollments", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="epochs-bench-"))
    os.chmod(work, 0o755)  # the throwaway server runs as another user below it
    server = None
    try:
        url = args.database_url
        if url is None:
            from district_devtools.postgres import start_postgres

            server = start_postgres(work / "postgres")
            url = server.create_database("bench")
        data_dir = None
        if server is not None:
            data_dir = server.data_dir
            server.psql("ALTER SYSTEM SET autovacuum = off")
            server.psql("SELECT pg_reload_conf()")
        folder = work / "set"
        counts = generate(folder, args.enrollments)
        rows = sum(counts.values())
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"set: {rows:,} rows ({', '.join(f'{k} {v:,}' for k, v in counts.items())}), "
              f"{size / 1e6:.1f} MB")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        # Interleaved, best of N: on a shared machine the load drifts; pairing the runs keeps
        # both sides under the same conditions.
        raws: list[tuple[float, float | None]] = []
        ours: list[tuple[float, float | None]] = []
        for _ in range(args.repeat):
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
