"""Faults caused for real: the database is down or refuses the password, pg_dump is killed
halfway, the disk fills up. Each time the earlier backups stay intact and nothing partial is
left under a final name."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from district_devtools.ports import free_port
from district_devtools.postgres import PostgresServer

from tests.conftest import missing

Run = Callable[..., Any]


def snapshot(directory: Path) -> dict[str, str]:
    """Every name in directory (hidden ones too) with the sha256 of its content."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def checksums_verify(directory: Path) -> bool:
    sums = sorted(p.name for p in directory.glob("*.sha256"))
    check = subprocess.run(["sha256sum", "-c", *sums], cwd=directory, capture_output=True,
                           check=False)
    return bool(sums) and check.returncode == 0


@pytest.fixture
def volume_with_a_backup(tmp_path: Path, new_database: Callable[[str], str], run_backup: Run,
                         seed_school: Run) -> tuple[Path, str]:
    """A volume holding one good backup of a small seeded database, and that database's URL."""
    url = new_database("faults")
    seed_school(url, students=30)
    root = tmp_path / "volume"
    root.mkdir()
    first = run_backup(root, url, "--district", "lincoln")
    assert first.returncode == 0, first.result
    return root, url


def assert_failed_cleanly(run: Any, reason: str, directory: Path,
                          before: dict[str, str]) -> None:
    assert run.returncode == 1
    assert run.result["kind"] == "backup" and run.result["outcome"] == "Failed"
    assert run.result["reason"] == reason, run.result
    assert run.result["file"] == "" and run.result["kept"] == 1
    assert any(e["event"] == "backup.failed" for e in run.events)
    assert snapshot(directory) == before, "earlier backups changed or something was left"
    assert checksums_verify(directory)


def test_database_down(volume_with_a_backup: tuple[Path, str], run_backup: Run) -> None:
    root, _ = volume_with_a_backup
    directory = root / "downloads" / "backups"
    before = snapshot(directory)
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/lincoln"
    run = run_backup(root, closed, "--district", "lincoln")
    assert_failed_cleanly(run, "DatabaseUnreachable", directory, before)
    assert "refused" in run.result["message"].lower()


def test_wrong_password(postgres: PostgresServer, volume_with_a_backup: tuple[Path, str],
                        run_backup: Run, seed_school: Run) -> None:
    root, _ = volume_with_a_backup
    directory = root / "downloads" / "backups"
    role = f"district_{os.getpid()}"
    postgres.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'right-horse-battery'")
    postgres.psql(f"CREATE DATABASE {role} OWNER {role}")
    good_url = postgres.database_url(role, user=role, password="right-horse-battery")
    seed_school(good_url, students=5)
    before = snapshot(directory)

    bad_url = postgres.database_url(role, user=role, password="wrong-staple")
    run = run_backup(root, bad_url, "--district", "lincoln")
    assert_failed_cleanly(run, "AuthenticationFailed", directory, before)
    assert "password" in run.result["message"]
    assert "wrong-staple" not in json.dumps(run.result) + json.dumps(run.events)

    # The right password reaches pg_dump too (through PGPASSWORD, not its command line).
    ok = run_backup(root, good_url, "--district", "lincoln")
    assert ok.returncode == 0, ok.result
    assert "right-horse-battery" not in json.dumps(ok.events)


@pytest.fixture(scope="module")
def large_database(postgres: PostgresServer) -> str:
    """A database whose dump takes long enough (about a second) to be killed halfway."""
    url = postgres.create_database(f"large_{os.getpid()}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int, payload text)")
        conn.execute("INSERT INTO events SELECT g, repeat(md5(g::text), 6) "
                     "FROM generate_series(1, 400000) AS g")
    return url


def children_named(parent: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # comm is in parentheses and may hold spaces; ppid is the second field after it.
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == parent and comm == name:
            found.append(int(entry.name))
    return found


def wait_for_pg_dump_writing(backup: subprocess.Popen[str], directory: Path) -> int:
    """The pid of the backup's pg_dump child, once its hidden temporary holds some data."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert backup.poll() is None, "the backup finished before it could be interrupted"
        pids = children_named(backup.pid, "pg_dump")
        partial = [p for p in directory.glob(".incomplete-*.dump") if p.stat().st_size > 65536]
        if pids and partial:
            return pids[0]
        time.sleep(0.005)
    raise AssertionError("pg_dump never started writing")


def test_pg_dump_killed_halfway(large_database: str, volume_with_a_backup: tuple[Path, str],
                                start_backup: Run) -> None:
    root, _ = volume_with_a_backup
    directory = root / "downloads" / "backups"
    before = snapshot(directory)
    backup, finish = start_backup(root, large_database, "--district", "lincoln")
    pg_dump = wait_for_pg_dump_writing(backup, directory)

    os.kill(pg_dump, signal.SIGKILL)
    run = finish()

    assert_failed_cleanly(run, "DumpFailed", directory, before)
    assert "SIGKILL" in run.result["message"]


def test_backup_job_stopped_stops_its_pg_dump(large_database: str,
                                              volume_with_a_backup: tuple[Path, str],
                                              start_backup: Run) -> None:
    """Kubernetes stops a Job past its deadline with SIGTERM: pg_dump must not outlive it."""
    root, _ = volume_with_a_backup
    directory = root / "downloads" / "backups"
    before = snapshot(directory)
    backup, finish = start_backup(root, large_database, "--district", "lincoln")
    pg_dump = wait_for_pg_dump_writing(backup, directory)

    backup.send_signal(signal.SIGTERM)
    run = finish()

    assert_failed_cleanly(run, "Interrupted", directory, before)
    assert not Path(f"/proc/{pg_dump}").exists()


def test_stale_temporary_of_a_killed_job_is_removed(volume_with_a_backup: tuple[Path, str],
                                                     run_backup: Run) -> None:
    root, url = volume_with_a_backup
    directory = root / "downloads" / "backups"
    stale = directory / ".incomplete-lincoln-20200101T000000Z.dump"
    stale.write_bytes(b"left by a job the kernel killed")
    run = run_backup(root, url, "--district", "lincoln")
    assert run.returncode == 0, run.result
    assert not stale.exists()
    assert [p.name for p in directory.glob(".*")] == []


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real file system that fills up."""
    if os.geteuid() != 0:
        missing("root, to mount a small tmpfs")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        missing(f"permission to mount a tmpfs ({mounted.stderr.strip()})")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_disk_full(small_volume: Path, new_database: Callable[[str], str], run_backup: Run,
                   seed_school: Run) -> None:
    url = new_database("diskfull")
    seed_school(url, students=30)
    first = run_backup(small_volume, url, "--district", "lincoln")
    assert first.returncode == 0, first.result
    directory = small_volume / "downloads" / "backups"
    before = snapshot(directory)
    with psycopg.connect(url, autocommit=True) as conn:
        # Random bytes do not compress: about 3 MB of archive on a 1 MiB volume.
        conn.execute("CREATE TABLE scans AS SELECT g AS id, "
                     "decode(md5(random()::text) || md5(random()::text), 'hex') AS blob "
                     "FROM generate_series(1, 100000) AS g")

    run = run_backup(small_volume, url, "--district", "lincoln")

    assert_failed_cleanly(run, "DiskFull", directory, before)
    assert "full" in run.result["message"] and "untouched" in run.result["message"]
