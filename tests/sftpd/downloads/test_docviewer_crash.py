"""SIGKILL `sftpd docviewer` at every step, for real: no epoch without COMPLETE ever carries a
final name, what is published is whole, and the rerun cleans up and publishes.

SFTPD_TEST_KILL_AT=N makes the process SIGKILL itself at its Nth checkpoint (between two
durable steps: mid-write, after the fsync, after COMPLETE, after the rename, mid-prune); a
second set of runs is SIGKILLed from outside while documents.csv is being written.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftpd.downloads.publish import EPOCH_NAME
from sftpd.epochs.checkpoints import KILL_AT_ENV
from tests.sftpd.downloads.conftest import (
    Seeded,
    docviewer_argv,
    read_epoch,
    run_docviewer,
    seed_documents,
)

pytestmark = pytest.mark.postgres
DOCVIEWER = Path("downloads/docviewer")
FILLER = 20_000  # enough rows that a kill lands mid-write


@pytest.fixture
def big(database_url: str) -> Seeded:
    return seed_documents(database_url, filler=FILLER)


def assert_only_whole_epochs(root: Path, rows: int) -> list[str]:
    """Every visible entry is a complete epoch with every row; returns their names."""
    names = sorted(p.name for p in (root / DOCVIEWER).iterdir() if not p.name.startswith("."))
    for name in names:
        assert EPOCH_NAME.match(name), name
        assert len(read_epoch(root / DOCVIEWER / name)) == rows, name
    return names


def test_killed_at_every_checkpoint_never_shows_a_partial_epoch(root: Path, big: Seeded,
                                                                key_file: Path) -> None:
    rows = len(big.expected)
    first = run_docviewer(root, big.url, key_file, "--keep", "1")
    assert first.returncode == 0, first.stderr
    # A run that publishes and then prunes the previous epoch: every checkpoint it passes.
    clean = run_docviewer(root, big.url, key_file, "--keep", "1")
    total = clean.events[-1]["checkpoints"]
    assert total == 6  # locked, mid-write, fsynced, COMPLETE, renamed, one prune
    published = assert_only_whole_epochs(root, rows)
    for kill_at in range(1, total + 1):
        killed = run_docviewer(root, big.url, key_file, "--keep", "1",
                               env={KILL_AT_ENV: str(kill_at)})
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        visible = assert_only_whole_epochs(root, rows)
        if kill_at <= 4:  # before the rename: only the epoch published before is visible
            assert visible == published, kill_at
        else:  # renamed: the new one is visible whole, the old one (pruned or not) before it
            assert visible[-1] > published[-1] and visible[:-1] in ([], published), kill_at
        rerun = run_docviewer(root, big.url, key_file, "--keep", "1")
        assert rerun.returncode == 0, (kill_at, rerun.stderr)
        assert rerun.result is not None
        published = assert_only_whole_epochs(root, rows)
        assert published == [rerun.result["epoch"]], kill_at
        hidden = [p.name for p in (root / DOCVIEWER).iterdir() if p.name.startswith(".")]
        assert hidden == [], (kill_at, hidden)


def test_killed_from_outside_while_writing(root: Path, big: Seeded, key_file: Path) -> None:
    rows = len(big.expected)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for attempt in range(3):
        proc = subprocess.Popen(docviewer_argv(root, big.url, key_file), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        building = None
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            hidden = [p for p in (root / DOCVIEWER).glob(".incomplete-*/documents.csv")]
            if hidden and hidden[0].stat().st_size > 0:
                building = hidden[0]
                break
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        if building is None:
            continue  # it finished before we saw it writing: no kill mid-write this time
        assert assert_only_whole_epochs(root, rows) == [], attempt
        break
    else:
        pytest.skip("the export always finished before it could be killed mid-write")
    rerun = run_docviewer(root, big.url, key_file)
    assert rerun.returncode == 0
    assert rerun.result is not None
    assert assert_only_whole_epochs(root, rows) == [rerun.result["epoch"]]
    assert [e["name"] for e in rerun.events if e["event"] == "docviewer.leftover_removed"]


def test_sigterm_mid_write_removes_the_partial_epoch(root: Path, big: Seeded,
                                                     key_file: Path) -> None:
    """A deadline's SIGTERM unwinds: exit 1, reason Interrupted, nothing left, hidden or not."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result_file = root.parent / "sigterm-result.json"
    proc = subprocess.Popen([*docviewer_argv(root, big.url, key_file),
                             "--result-file", str(result_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        partial = list((root / DOCVIEWER).glob(".incomplete-*/documents.csv"))
        if partial and partial[0].stat().st_size > 0:
            break
        time.sleep(0.005)
    else:
        pytest.fail("never saw documents.csv being written")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    assert '"reason":"Interrupted"' in result_file.read_text()
    assert list((root / DOCVIEWER).iterdir()) == []


def test_a_second_run_while_one_holds_the_directory_fails_busy(root: Path, big: Seeded,
                                                               key_file: Path) -> None:
    (root / DOCVIEWER).mkdir(parents=True)
    fd = os.open(root / DOCVIEWER, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = run_docviewer(root, big.url, key_file)
    finally:
        os.close(fd)
    assert run.returncode == 1
    assert run.result is not None and run.result["reason"] == "Busy"
    assert list((root / DOCVIEWER).iterdir()) == []
