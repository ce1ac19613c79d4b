"""Peak memory of `sftpd process-epochs` on a zip bomb, beside the same set zipped honestly.

    python bench/epochs_zip_bomb_memory.py [--rows 10000000] [--code DIR] [--timeout 600]

The bomb is the hand-made OneRoster 1.1 bulk set zipped with a manifest.csv padded by `--rows`
short rows (`x,y`): 40 MB that deflate to about 40 KB. Each side is one real process-epochs run
in its own process over a fresh tree and database (a throwaway PostgreSQL server); its peak RSS
is its VmHWM (/proc/<pid>/status), sampled every 20 ms until it exits. `--code DIR` runs another
checkout's `sftpd` (for example the code before the archive checks:
`git archive <commit> sftpd | tar -x -C DIR`).
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
import zipfile
from pathlib import Path

from sftpd import tree

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "oneroster" / "v1.1-bulk"


def make_tree(root: Path, manifest_rows: int) -> int:
    """A district tree whose upload holds one zipped set; the zip's size."""
    tree.ensure_tree(root)
    epoch = root / tree.UPLOAD / "2026-09-01"
    epoch.mkdir()
    with zipfile.ZipFile(epoch / "set.zip", "w", zipfile.ZIP_DEFLATED) as out:
        for source in sorted(DATA.iterdir()):
            data = source.read_bytes()
            if source.name == "manifest.csv":
                data += b"x,y\n" * manifest_rows
            out.writestr(f"export/{source.name}", data, compresslevel=9)
    return (epoch / "set.zip").stat().st_size


def run(root: Path, url: str, code: str | None, timeout: float) -> tuple[float, float, str]:
    """(peak RSS MiB, wall seconds, how it ended) of one process-epochs run."""
    path = [code] if code else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path + sys.path)}
    started = time.monotonic()
    log = root.parent / f"{root.name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sftpd", "process-epochs", "--root", str(root),
             "--database-url", url, "--now", "2100-01-01T00:00:00Z"], env=env,
            stdout=out, stderr=subprocess.STDOUT,
            cwd=root.parent)  # not the checkout: `python -m` puts the cwd first on the path
    ended = "exit"
    deadline = started + timeout
    peak_kib = 0
    while proc.poll() is None:
        peak_kib = max(peak_kib, high_water_kib(proc.pid))
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            ended = "killed at the timeout"
            break
        time.sleep(0.02)
    if ended == "exit":
        ended = f"exit {proc.returncode}"
        last = log.read_text(errors="replace").strip().splitlines()[-1:]
        if last and '"epochs.finished"' in last[0]:
            result = json.loads(json.loads(last[0])["result"])
            ended += f": {result['message'][:70]}"
            for report in (root / tree.UPLOAD_PROCESSED).glob("*/processing.json"):
                problems = json.loads(report.read_text())["problems"]
                if problems:
                    ended += f"\n{'':<34}first error: {problems[0]['message'][:100]}"
        elif last:
            ended += f": {last[0][:70]}"
    return peak_kib / 1024, time.monotonic() - started, ended


def high_water_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), counted from its exec (a child's
    rusage would include this script's memory, shared at fork)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--code", help="a directory holding another `sftpd` package to run")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    from district_devtools.postgres import start_postgres

    work = Path(tempfile.mkdtemp(prefix="zip-bomb-bench-"))
    os.chmod(work, 0o755)  # the throwaway server runs as another user below it
    server = start_postgres(work / "postgres")
    try:
        print(f"code: {args.code or 'this checkout'}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'':<34}{'zip bytes':>10}{'peak RSS MiB':>14}{'wall s':>8}  end")
        for label, rows in (("honest zip (reference)", 0),
                            (f"bomb: manifest + {args.rows:,} rows", args.rows)):
            root = work / f"tree-{rows}"
            size = make_tree(root, rows)
            url = server.create_database(f"b{rows}")
            rss, wall, ended = run(root, url, args.code, args.timeout)
            print(f"{label:<34}{size:>10,}{rss:>14.0f}{wall:>8.1f}  {ended}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
