"""Fixtures for the backup tests: run the real `sftpd backup` command and seed real databases."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from district_devtools.postgres import PostgresServer


@dataclass
class BackupRun:
    """One finished `sftpd backup` process: exit code, its JSON result, its log lines."""

    returncode: int
    result: dict[str, Any]
    events: list[dict[str, Any]]
    stderr: str


def backup_command(root: Path, url: str, result_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sftpd", "backup", "--root", str(root), "--database-url", url,
            "--result-file", str(result_file), *extra]


def finish(proc: subprocess.CompletedProcess[str] | subprocess.Popen[str], stdout: str,
           stderr: str, result_file: Path) -> BackupRun:
    assert proc.returncode is not None
    result = json.loads(result_file.read_text())
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return BackupRun(proc.returncode, result, events, stderr)


@pytest.fixture
def run_backup(tmp_path: Path) -> Callable[..., BackupRun]:
    """Run `sftpd backup --root ROOT --database-url URL [extra...]` to completion."""
    counter = iter(range(1_000_000))

    def run(root: Path, url: str, *extra: str) -> BackupRun:
        result_file = tmp_path / f"result-{next(counter)}.json"
        proc = subprocess.run(backup_command(root, url, result_file, *extra),
                              capture_output=True, text=True, timeout=120, check=False)
        return finish(proc, proc.stdout, proc.stderr, result_file)

    return run


def _seed_school(url: str, students: int = 200) -> None:
    """A small district database with awkward types: unicode, NULLs, bytea, jsonb, numerics."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE schools (id int PRIMARY KEY, name text NOT NULL, opened date);
            CREATE TABLE students (
                id bigint PRIMARY KEY, school_id int REFERENCES schools(id),
                given_name text, family_name text, gpa numeric(4, 2), photo bytea,
                profile jsonb, enrolled_at timestamptz);
            CREATE INDEX students_by_school ON students (school_id);
            CREATE VIEW honor_roll AS SELECT id, family_name FROM students WHERE gpa >= 3.5;
            INSERT INTO schools VALUES (1, 'Lincoln Élémentaire', '1962-09-01'),
                                       (2, 'Ōkubo 中学校', NULL),
                                       (3, 'O''Brien "High"', '2001-01-31');
        """)
        conn.execute("""
            INSERT INTO students
            SELECT g, 1 + g %% 3, 'Zoë-' || g, CASE WHEN g %% 7 = 0 THEN NULL ELSE 'Nguyễn' END,
                   round((g %% 400) / 100.0, 2), decode(md5(g::text), 'hex'),
                   jsonb_build_object('grade', g %% 12, 'tags', jsonb_build_array('a', g)),
                   timestamptz '2024-08-20 08:00:00+00' + g * interval '1 minute'
            FROM generate_series(1, %s) AS g
        """, (students,))


def _table_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


_DATABASES = itertools.count()


@pytest.fixture
def new_database(postgres: PostgresServer) -> Callable[[str], str]:
    """Create a database with a unique name; return its URL."""
    def create(prefix: str) -> str:
        # One counter for the whole session: an object's id() is reused once it is freed.
        return postgres.create_database(f"{prefix}_{next(_DATABASES)}")

    return create


@pytest.fixture
def seed_school() -> Callable[..., None]:
    return _seed_school


@pytest.fixture
def table_rows() -> Callable[[str, str], list[tuple[Any, ...]]]:
    return _table_rows


Started = tuple[subprocess.Popen[str], Callable[[], BackupRun]]


@pytest.fixture
def start_backup(tmp_path: Path) -> Iterator[Callable[..., Started]]:
    """Start `sftpd backup` without waiting; returns the process and a function to finish it."""
    counter = iter(range(1_000_000))
    started: list[subprocess.Popen[str]] = []

    def start(root: Path, url: str, *extra: str) -> Started:
        result_file = tmp_path / f"started-{next(counter)}.json"
        proc = subprocess.Popen(backup_command(root, url, result_file, *extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)

        def wait() -> BackupRun:
            out, err = proc.communicate(timeout=120)
            return finish(proc, out, err, result_file)

        return proc, wait

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
