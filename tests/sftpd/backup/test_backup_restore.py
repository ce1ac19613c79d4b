"""A backup made by `sftpd backup` restores into a fresh database, row for row, and rotates."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from district_devtools.postgres import PostgresServer

from sftpd.backup.rotation import BACKUP_NAME

Run = Callable[..., Any]


def backups_dir(root: Path) -> Path:
    return root / "downloads" / "backups"


def visible(root: Path) -> list[str]:
    return sorted(p.name for p in backups_dir(root).iterdir())


def test_backup_restores_row_for_row_and_checksum_verifies(
        tmp_path: Path, postgres: PostgresServer, new_database: Callable[[str], str],
        run_backup: Run, seed_school: Run, table_rows: Run) -> None:
    source = new_database("lincoln")
    seed_school(source, students=500)
    root = tmp_path / "volume"
    root.mkdir()

    run = run_backup(root, source, "--keep-backups", "3")

    assert run.returncode == 0, run.result
    result = run.result
    assert result["kind"] == "backup" and result["outcome"] == "Succeeded"
    name = result["file"]
    # The prefix is derived from the database name when --district is not given.
    assert name.startswith(source.rsplit("/", 1)[1] + "-") and BACKUP_NAME.match(name)
    dump = backups_dir(root) / name
    assert result["bytes"] == dump.stat().st_size > 0
    assert result["completedAt"].endswith("Z") and result["kept"] == 1 and result["pruned"] == []
    server_major = int(postgres.psql("SHOW server_version_num")) // 10000
    assert result["serverMajor"] == server_major and result["pgDumpMajor"] >= server_major
    # Only the dump and its checksum are visible: no temporary is left behind.
    assert visible(root) == [name, name + ".sha256"]
    assert (backups_dir(root) / (name + ".sha256")).read_text() == f"{result['sha256']}  {name}\n"
    check = subprocess.run(["sha256sum", "-c", name + ".sha256"], cwd=backups_dir(root),
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0 and check.stdout.strip() == f"{name}: OK"
    assert any(e["event"] == "backup.published" and e["file"] == name for e in run.events)

    # The restore a district runs: pg_restore into a fresh, empty database.
    target = new_database("restored")
    restore = subprocess.run(
        [str(postgres.bin_dir / "pg_restore"), "--no-owner", "--exit-on-error",
         f"--dbname={target}", str(dump)], capture_output=True, text=True, check=False)
    assert restore.returncode == 0, restore.stderr
    for table in ("schools", "students", "honor_roll"):
        original = table_rows(source, table)
        assert original, table
        assert table_rows(target, table) == original


def test_checksum_catches_a_damaged_backup(tmp_path: Path, new_database: Callable[[str], str],
                                           run_backup: Run, seed_school: Run) -> None:
    source = new_database("damaged")
    seed_school(source, students=20)
    root = tmp_path / "volume"
    root.mkdir()
    run = run_backup(root, source, "--district", "lincoln")
    assert run.returncode == 0, run.result
    assert run.result["file"].startswith("lincoln-")
    dump = backups_dir(root) / run.result["file"]
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    check = subprocess.run(["sha256sum", "-c", dump.name + ".sha256"], cwd=dump.parent,
                           capture_output=True, text=True, check=False)
    assert check.returncode != 0 and "FAILED" in check.stdout


def test_rotation_keeps_newest_good_backups_and_leaves_other_files(
        tmp_path: Path, new_database: Callable[[str], str], run_backup: Run,
        seed_school: Run) -> None:
    source = new_database("rotate")
    seed_school(source, students=10)
    root = tmp_path / "volume"
    directory = backups_dir(root)
    directory.mkdir(parents=True)
    # Files rotation must never delete: staff notes, a dump nobody verified, an old export
    # from a killed job (hidden temporaries are the job's own and are cleaned up).
    (directory / "README.txt").write_text("ask staff before deleting\n")
    (directory / "lincoln-20200101T000000Z.dump").write_bytes(b"not verified")
    (directory / ".incomplete-lincoln-20200101T000000Z.dump").write_bytes(b"half")

    names = []
    for _ in range(4):
        run = run_backup(root, source, "--district", "lincoln", "--keep-backups", "2")
        assert run.returncode == 0, run.result
        names.append(run.result["file"])
    assert len(set(names)) == 4

    assert run.result["kept"] == 2
    assert sorted(run.result["pruned"]) == [names[1]]
    assert visible(root) == sorted(["README.txt", "lincoln-20200101T000000Z.dump",
                                    names[2], names[2] + ".sha256",
                                    names[3], names[3] + ".sha256"])
    assert (directory / "README.txt").read_text() == "ask staff before deleting\n"
    check = subprocess.run(["sha256sum", "-c", names[2] + ".sha256", names[3] + ".sha256"],
                           cwd=directory, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_keep_zero_is_refused(tmp_path: Path, database_url: str, run_backup: Run) -> None:
    proc = subprocess.run([sys.executable, "-m", "sftpd", "backup", "--root", str(tmp_path),
                           "--database-url", database_url, "--keep-backups", "0"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "at least 1" in proc.stderr
    assert not (tmp_path / "downloads").exists()
