"""SameGoal's epoch conventions in gathering: `<name>_auto.csv` files become an epoch with a
`COMPLETE` as soon as they are closed, named `YYYYMMDD-HHMMSS` (UTC), the `_auto` dropped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sftpd import tree
from sftpd.epochs.completion import check
from sftpd.epochs.gather import gather_loose_files, gathered_note
from sftpd.epochs.names import GATHERED_FROM
from sftpd.epochs.stagings import Record
from tests.sftpd.epochs.conftest import scalar

# Many real processor runs each: minutes on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(900)

STAMP = datetime(2026, 11, 28, 2, 0, 7, tzinfo=UTC).timestamp()


def loose(root: Path, name: str, text: str = "Email\n", mtime: float = STAMP) -> Path:
    path = root / tree.UPLOAD / name
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def record(database_url: str) -> Iterator[Record]:
    """The processor's staging record in a fresh district database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield Record(conn, datetime.now(UTC))


@contextmanager
def held_open(path: Path) -> Iterator[None]:
    """Another process holds the file open for writing the way `sftpd serve` does."""
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys; from sftpd.uploads import hold_write_lock; "
         "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND); hold_write_lock(fd); "
         "print('locked', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "locked\n"
        yield
    finally:
        writer.communicate("", timeout=10)


def test_auto_files_closed_together_become_one_epoch_at_once(root: Path,
                                                            record: Record) -> None:
    loose(root, "students_auto.csv", "Student Id\n", STAMP - 5)
    loose(root, "guardians_auto.csv", "Student Id\n")
    # Written a second ago: the quiet time (an hour here) is not awaited for _auto files.
    result = gather_loose_files(root / tree.UPLOAD, 3600, STAMP + 1, record)
    assert result.epochs == ["20261128-020007"] and result.waiting is None
    epoch = root / tree.UPLOAD / "20261128-020007"
    assert sorted(p.name for p in epoch.iterdir()) == [
        GATHERED_FROM, "COMPLETE", "guardians.csv", "students.csv"]
    assert (epoch / "COMPLETE").read_bytes() == b""
    assert (epoch / "students.csv").read_text() == "Student Id\n"
    assert gathered_note(epoch) == ("gathered from loose files in upload/: guardians_auto.csv "
                                    "(as guardians.csv), students_auto.csv (as students.csv)")
    # A later run (no longer in this run's list) still sees it complete: the marker.
    assert check(epoch, 3600, STAMP + 2).reason == "COMPLETE marker"


def test_auto_file_open_for_writing_waits_and_holds_back_its_batch(root: Path,
                                                                  record: Record) -> None:
    loose(root, "students_auto.csv")
    guardians = loose(root, "guardians_auto.csv")
    with held_open(guardians):
        result = gather_loose_files(root / tree.UPLOAD, 0, STAMP + 10, record)
        assert result.epochs == []
        assert result.waiting == "guardians_auto.csv is still open for writing"
    result = gather_loose_files(root / tree.UPLOAD, 0, STAMP + 10, record)
    assert result.epochs == ["20261128-020007"]
    assert not guardians.exists()


def test_auto_file_under_a_temporary_name_waits(root: Path, record: Record) -> None:
    loose(root, "students_auto.csv")
    part = loose(root, "guardians_auto.csv.filepart")
    result = gather_loose_files(root / tree.UPLOAD, 0, STAMP + 10, record)
    assert result.epochs == [] and "temporary upload name" in (result.waiting or "")
    part.rename(part.with_name("guardians_auto.csv"))
    again = gather_loose_files(root / tree.UPLOAD, 0, STAMP + 10, record)
    assert again.epochs == ["20261128-020007"]


def test_other_loose_files_still_settle_and_are_not_renamed(root: Path, record: Record) -> None:
    loose(root, "users_auto.csv")
    loose(root, "notes_from_vendor.csv", "x\n", time.time())
    result = gather_loose_files(root / tree.UPLOAD, 300, time.time(), record)
    # The _auto file went at once; the other loose file waits for its quiet time.
    assert result.epochs == ["20261128-020007"]
    assert result.waiting is not None and result.waiting.startswith("last change")
    assert (root / tree.UPLOAD / "notes_from_vendor.csv").is_file()
    result = gather_loose_files(root / tree.UPLOAD, 300, time.time() + 301, record)
    assert len(result.epochs) == 1
    epoch = root / tree.UPLOAD / result.epochs[0]
    assert datetime.strptime(epoch.name, "%Y%m%d-%H%M%S")  # the documented form
    assert sorted(p.name for p in epoch.iterdir()) == [GATHERED_FROM, "notes_from_vendor.csv"]


def test_names_taken_within_the_same_second_move_on_by_a_second(root: Path,
                                                               record: Record) -> None:
    (root / tree.UPLOAD_PROCESSED / "20261128-020007").mkdir()  # processed last night
    (root / tree.UPLOAD / "20261128-020008").mkdir()  # the district's own epoch
    loose(root, "users_auto.csv")
    first = gather_loose_files(root / tree.UPLOAD, 0, STAMP + 10, record).epochs
    loose(root, "users_auto.csv")  # uploaded again within the same second
    second = gather_loose_files(root / tree.UPLOAD, 0, STAMP + 10, record).epochs
    assert first == ["20261128-020009"] and second == ["20261128-020010"]
    for name in ("20261128-020009", "20261128-020010"):
        assert (root / tree.UPLOAD / name / "users.csv").is_file()


def test_auto_names_are_bytes_and_only_recorded_stagings_are_trusted(root: Path,
                                                                   record: Record) -> None:
    upload = root / tree.UPLOAD
    # A name that is not UTF-8 keeps its bytes; only the `_auto` is dropped.
    raw = os.path.join(os.fsencode(upload), b"l\xe9ves_auto.csv")
    with open(raw, "wb") as f:
        f.write(b"Student Id\n")
    os.utime(raw, (STAMP, STAMP))
    # A planted `_auto` staging with a list naming a file outside upload/: never acted on.
    planted = upload / ".sftpd-gather-auto-20261128-020007"
    planted.mkdir()
    (planted / ".sftpd-gather-list").write_text("../upload-processed\nl\u00e9ves_auto.csv\n")
    result = gather_loose_files(upload, 3600, STAMP + 1, record)
    assert result.epochs == ["20261128-020007"]
    assert result.untrusted == [".sftpd-gather-auto-20261128-020007"]
    assert sorted(p.name for p in planted.iterdir()) == [".sftpd-gather-list"]
    epoch = os.path.join(os.fsencode(upload), b"20261128-020007")
    assert sorted(os.listdir(epoch)) == [
        b".sftpd-gathered-from", b"COMPLETE", b"l\xe9ves.csv"]
    assert gathered_note(upload / "20261128-020007") == (
        "gathered from loose files in upload/: l\\xe9ves_auto.csv (as l\\xe9ves.csv)")
    assert scalar_rows(record) == 0


def scalar_rows(record: Record) -> int:
    row = record.conn.execute("SELECT count(*) FROM sftpd.gather_stagings").fetchone()
    assert row is not None
    return int(row[0])


_GATHER = ("import sys; from datetime import UTC, datetime; from pathlib import Path; "
           "import psycopg; from sftpd.epochs.gather import gather_loose_files; "
           "from sftpd.epochs.stagings import Record; "
           "from sftpd.epochs.checkpoints import passed; "
           "conn = psycopg.connect(sys.argv[3], autocommit=True); "
           "record = Record(conn, datetime.now(UTC)); "
           "print(gather_loose_files(Path(sys.argv[1]), 0, float(sys.argv[2]), record).epochs, "
           "passed())")


def test_auto_gathering_killed_at_every_step_ends_in_one_complete_epoch(
        root: Path, database_url: str) -> None:
    """SIGKILL at each of gathering's checkpoints, then a rerun: one epoch, every file in it
    under its new name, its COMPLETE and its record, nothing left behind in upload/."""
    upload = root / tree.UPLOAD
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    files = {"students_auto.csv": "Student Id\nS1\n", "guardians_auto.csv": "Student Id\nS1\n"}

    def run(kill_at: int | None) -> subprocess.CompletedProcess[str]:
        extra = {} if kill_at is None else {"SFTPD_TEST_KILL_AT": str(kill_at)}
        return subprocess.run([sys.executable, "-c", _GATHER, str(upload), str(STAMP + 10),
                               database_url],
                              env={**env, **extra}, capture_output=True, text=True, timeout=60)

    for name, text in files.items():
        loose(root, name, text)
    steps = int(run(None).stdout.split()[-1])
    # staging made, staging recorded, 2 files moved, names written, revealed, record dropped
    assert steps == 7
    for kill_at in range(1, steps + 1):
        for child in upload.iterdir():
            subprocess.run(["rm", "-rf", str(child)], check=True)
        for name, text in files.items():
            loose(root, name, text)
        assert run(kill_at).returncode == -9
        done = run(None)
        assert done.returncode == 0, done.stderr
        epochs = [p for p in upload.iterdir()]
        assert [p.name for p in epochs] == ["20261128-020007"], (kill_at, epochs)
        assert sorted(p.name for p in epochs[0].iterdir()) == [
            GATHERED_FROM, "COMPLETE", "guardians.csv", "students.csv"], kill_at
        assert (epochs[0] / "students.csv").read_text() == "Student Id\nS1\n"
        assert scalar(database_url, "SELECT count(*) FROM sftpd.gather_stagings") == 0
