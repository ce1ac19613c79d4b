"""SIGKILL the processor at many points, rerun, and check every epoch landed exactly once.

The kills are real: SFTPD_TEST_KILL_AT=N makes the process SIGKILL itself at its Nth
checkpoint (every gap between two durable steps, including between the commit and the move),
and a second set of runs is SIGKILLed from outside after a random delay.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sftpd import tree
from sftpd.epochs.checkpoints import KILL_AT_ENV
from sftpd.epochs.names import GATHERED_FROM
from tests.sftpd.epochs.conftest import DATA, LATER, run_epochs

# Dozens of processor runs killed and rerun: minutes on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(1200)

EPOCHS = {"2026-09-01": "v1.1-bulk", "2026-09-02": "v1.1-delta",
          "2026-09-03-bad": "broken-references"}
LOOSE = "v1.2-delta"  # uploaded loose; gathered as 20260904-000000
GATHERED = "20260904-000000"
UNRECOGNIZED = "prior-system-dump"
SEED = int(os.environ.get("CRASH_SEED", str(time.time_ns() % 100_000)))


def make_template(path: Path) -> dict[str, dict[str, bytes]]:
    """The upload as the district left it; returns each expected epoch's files."""
    upload = path / tree.UPLOAD
    tree.ensure_tree(path)
    expected: dict[str, dict[str, bytes]] = {}
    for name, dataset in EPOCHS.items():
        shutil.copytree(DATA / dataset, upload / name)
        expected[name] = {p.name: p.read_bytes() for p in (DATA / dataset).iterdir()}
    stamp = datetime(2026, 9, 4, tzinfo=UTC).timestamp()
    for source in (DATA / LOOSE).iterdir():
        (upload / source.name).write_bytes(source.read_bytes())
        os.utime(upload / source.name, (stamp, stamp))
    expected[GATHERED] = {p.name: p.read_bytes() for p in (DATA / LOOSE).iterdir()}
    shutil.copytree(DATA / "unrecognized", upload / UNRECOGNIZED)
    return expected


def run_killable(root: Path, url: str, kill_at: int | None = None,
                 kill_after: float | None = None) -> tuple[int, dict[str, Any] | None]:
    """`sftpd process-epochs` in its own process; its return code and final progress line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if kill_at is not None:
        env[KILL_AT_ENV] = str(kill_at)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sftpd", "process-epochs", "--root", str(root),
         "--database-url", url, "--now", LATER], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    return proc.returncode, (lines[-1] if lines else None)


def state(url: str) -> tuple[dict[str, int], str, list[tuple[str, str, bool]]]:
    """Row counts, a digest of every OneRoster row, and the ledger."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'oneroster' "
            "ORDER BY 1").fetchall()]
        rows: dict[str, int] = {}
        digest = hashlib.sha256()
        for table in tables:
            data = conn.execute(f"SELECT t::text FROM oneroster.{table} t ORDER BY 1").fetchall()
            rows[table] = len(data)
            digest.update(table.encode() + b"".join(r[0].encode() for r in data))
        ledger = [(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT name, outcome, moved_at IS NOT NULL FROM sftpd.epochs ORDER BY name")]
    return rows, digest.hexdigest(), ledger


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS oneroster CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS sftpd CASCADE")


def check_tree(root: Path, expected: dict[str, dict[str, bytes]],
               unrecognized: dict[str, bytes], context: str) -> None:
    processed = root / tree.UPLOAD_PROCESSED
    assert sorted(p.name for p in processed.iterdir()) == sorted(expected), context
    for name, files in expected.items():
        found = {p.name: p.read_bytes() for p in (processed / name).iterdir()
                 if p.name not in ("processing.log", "processing.json", GATHERED_FROM)}
        assert found == files, f"{context}: files of {name} differ"
        assert (processed / name / "processing.json").is_file(), context
    upload = root / tree.UPLOAD
    assert [p.name for p in upload.iterdir()] == [UNRECOGNIZED], context
    assert {p.name: p.read_bytes() for p in (upload / UNRECOGNIZED).iterdir()} == unrecognized


def test_sigkill_at_random_points_then_rerun(tmp_path: Path, database_url: str) -> None:
    template = tmp_path / "template"
    expected = make_template(template)
    unrecognized = {p.name: p.read_bytes() for p in (DATA / "unrecognized").iterdir()}
    root = tmp_path / "district"

    # The reference: one uninterrupted run (which also counts the checkpoints it passes).
    shutil.copytree(template, root)
    code, last = run_killable(root, database_url)
    assert code == 1 and last is not None  # 1: the broken epoch fails, by design
    total = int(last["checkpoints"])
    reference = state(database_url)
    check_tree(root, expected, unrecognized, "reference run")
    assert [(n, o) for n, o, _ in reference[2]] == [
        ("2026-09-01", "Succeeded"), ("2026-09-02", "Succeeded"),
        ("2026-09-03-bad", "Failed"), (GATHERED, "Succeeded")]
    assert total >= 30

    rng = random.Random(SEED)
    # Every checkpoint once, then random ones, some runs killed twice before the final run,
    # then kills from outside at random moments.
    plans: list[list[tuple[str, float]]] = [[("at", n)] for n in range(1, total + 1)]
    plans += [[("at", rng.randint(1, total))] for _ in range(10)]
    plans += [[("at", rng.randint(1, total)), ("at", rng.randint(1, total))] for _ in range(8)]
    plans += [[("after", rng.uniform(0.2, 1.5))] for _ in range(8)]
    print(f"crash-safety seed {SEED} (rerun with CRASH_SEED={SEED}), {len(plans)} plans")
    killed = 0
    for number, plan in enumerate(plans):
        context = f"seed {SEED}, plan {number}: {plan}"
        shutil.rmtree(root)
        shutil.copytree(template, root)
        reset(database_url)
        for how, value in plan:
            if how == "at":
                code, _ = run_killable(root, database_url, kill_at=int(value))
            else:
                code, _ = run_killable(root, database_url, kill_after=value)
            killed += code == -signal.SIGKILL
        code, result = run_epochs(root, database_url)
        assert (code, result["outcome"]) in ((0, "NeedsAttention"), (1, "Failed")), context
        rows, digest, ledger = state(database_url)
        assert (rows, digest) == reference[:2], context
        assert ledger == [(n, o, True) for n, o, _ in reference[2]], context
        check_tree(root, expected, unrecognized, context)
    print(f"{killed} runs were SIGKILLed, at {total} checkpoints")
    assert killed >= 50, f"only {killed} runs were actually killed"
