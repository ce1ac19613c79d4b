"""Helpers for epoch-processing tests: a real tree, the hand-made OneRoster sets, real runs."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sftpd import cli, tree

DATA = Path(__file__).resolve().parents[2] / "data" / "oneroster"
# A --now far after any file's mtime: every epoch counts as settled.
LATER = "2100-01-01T00:00:00Z"


def put_epoch(root: Path, name: str, dataset: str) -> Path:
    """Upload a hand-made set as upload/<name>/ (a real copy of the files)."""
    target = root / tree.UPLOAD / name
    shutil.copytree(DATA / dataset, target)
    return target


def run_epochs(root: Path, database_url: str, *extra: str,
               now: str | None = LATER) -> tuple[int, dict[str, Any]]:
    """Run `sftpd process-epochs` in this process; its exit code and parsed result line."""
    result_file = root.parent / f"{root.name}-result.json"
    argv = ["process-epochs", "--root", str(root), "--database-url", database_url,
            "--result-file", str(result_file), "--settle-seconds", "300", *extra]
    if now is not None:
        argv += ["--now", now]
    code = cli.main(argv)
    return code, json.loads(result_file.read_text())


def scalar(database_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def counts(database_url: str) -> dict[str, int]:
    """Rows per OneRoster table (empty when the schema does not exist yet)."""
    with psycopg.connect(database_url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'oneroster' "
            "ORDER BY 1").fetchall()]
        return {n: conn.execute(f"SELECT count(*) FROM oneroster.{n}").fetchone()[0]  # type: ignore[index]
                for n in names}


def processing(root: Path, name: str) -> tuple[str, dict[str, Any]]:
    """The processing.log and processing.json of a processed epoch."""
    epoch = root / tree.UPLOAD_PROCESSED / name
    return (epoch / "processing.log").read_text(), json.loads(
        (epoch / "processing.json").read_text())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "district"
    tree.ensure_tree(path)
    return path


# A safety net for tests that feed the processor hostile input: a run that would eat the
# machine's memory fails with MemoryError instead (the tests assert far lower peaks).
_CHILD_ADDRESS_SPACE = 4 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_CHILD_ADDRESS_SPACE, _CHILD_ADDRESS_SPACE))


@dataclass
class Run:
    """One `sftpd process-epochs` process: exit code, result line, progress lines, peak RSS
    (sampled every 20 ms)."""

    code: int
    result: dict[str, Any] | None
    events: list[dict[str, Any]]
    stderr: str
    peak_rss_mib: float


def run_process(root: Path, database_url: str, *extra: str, now: str | None = LATER) -> Run:
    """Run the real `sftpd process-epochs` console command in its own process."""
    result_file = root.parent / f"{root.name}-result.json"
    result_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "sftpd", "process-epochs", "--root", str(root),
            "--database-url", database_url, "--result-file", str(result_file),
            "--settle-seconds", "300", *extra]
    if now is not None:
        argv += ["--now", now]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err,
                                preexec_fn=_limit_memory)
        peak_kib = 0
        while proc.poll() is None:
            peak_kib = max(peak_kib, _high_water_kib(proc.pid))
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return Run(proc.returncode, result, events, stderr, peak_kib / 1024)


def _high_water_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), counted from its exec: unlike the
    rusage of a child, it does not include the test process's memory, shared at fork."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
