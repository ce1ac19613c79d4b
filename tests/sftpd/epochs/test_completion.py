"""Partial uploads are never processed; loose files are gathered into an epoch once settled."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import pytest

from sftpd import tree
from sftpd.epochs.names import GATHERED_FROM
from tests.sftpd.epochs.conftest import DATA, counts, processing, put_epoch, run_epochs
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess, keys, start_server

__all__ = ["keys"]  # the server tests' key fixture, used here by name


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def server(root: Path, keys: Keys, tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `sftpd serve` over the same tree the processor works on."""
    srv = start_server(root, keys, tmp_path / "audit.jsonl")
    yield srv
    srv.stop()


def test_file_held_open_by_a_live_sftp_session_is_not_processed(
        root: Path, database_url: str, server: ServerProcess, keys: Keys) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    enrollments = (epoch / "enrollments.csv").read_bytes()
    (epoch / "enrollments.csv").unlink()
    (epoch / "_COMPLETE").touch()  # even a client's marker must not beat an open file
    transport = paramiko.Transport(("127.0.0.1", server.port))
    transport.connect(username=LOGIN, pkey=paramiko.Ed25519Key.from_private_key_file(
        str(keys.client)))
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    try:
        upload = sftp.open("/upload/2026-09-01/enrollments.csv", "wb")
        upload.write(enrollments[:100])
        upload.flush()
        code, result = run_epochs(root, database_url)
        assert code == 0 and result["pending"] == ["2026-09-01"]
        assert result["processed"] == [] and result["outcome"] == "NothingToDo"
        assert epoch.is_dir() and counts(database_url) == {}
        upload.write(enrollments[100:])
        upload.close()
    finally:
        sftp.close()
        transport.close()
    code, result = run_epochs(root, database_url)
    assert code == 0 and [p["name"] for p in result["processed"]] == ["2026-09-01"]
    assert counts(database_url)["enrollments"] == 7


def test_file_locked_by_another_writer_process_is_not_processed(root: Path,
                                                                database_url: str) -> None:
    """The same contract without the server: another process holds the write lock the way
    `sftpd serve` does (sftpd.uploads.hold_write_lock on its open file)."""
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    (epoch / "_COMPLETE").touch()
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys; from sftpd.uploads import hold_write_lock; "
         "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND); hold_write_lock(fd); "
         "print('locked', flush=True); sys.stdin.read()", str(epoch / "users.csv")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "locked\n"
        code, result = run_epochs(root, database_url)
        assert code == 0 and result["pending"] == ["2026-09-01"] and result["processed"] == []
        assert counts(database_url) == {}
    finally:
        writer.communicate("", timeout=10)
    code, result = run_epochs(root, database_url)
    assert [p["name"] for p in result["processed"]] == ["2026-09-01"]


@pytest.mark.parametrize("suffix", [".filepart", ".part"])
def test_temporary_upload_name_keeps_the_epoch_waiting(root: Path, database_url: str,
                                                       suffix: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    (epoch / "users.csv").rename(epoch / f"users.csv{suffix}")
    (epoch / "_COMPLETE").touch()
    code, result = run_epochs(root, database_url)
    assert code == 0 and result["pending"] == ["2026-09-01"] and result["processed"] == []
    assert counts(database_url) == {}
    (epoch / f"users.csv{suffix}").rename(epoch / "users.csv")
    code, result = run_epochs(root, database_url)
    assert [p["outcome"] for p in result["processed"]] == ["Succeeded"]


def test_epoch_written_within_the_settle_time_waits(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    # Files that keep an old mtime (as `sftp put -p` does) but arrived just now: the ctime
    # tells the truth.
    old = time.time() - 7200
    for path in [epoch, *epoch.iterdir()]:
        os.utime(path, (old, old))
    code, result = run_epochs(root, database_url, now=None)
    assert code == 0 and result["pending"] == ["2026-09-01"]
    assert counts(database_url) == {}
    code, result = run_epochs(root, database_url, now=_iso(time.time() + 120))
    assert result["pending"] == ["2026-09-01"]
    code, result = run_epochs(root, database_url, now=_iso(time.time() + 301))
    assert [p["name"] for p in result["processed"]] == ["2026-09-01"]
    assert counts(database_url)["users"] == 6


def test_completion_marker_finishes_an_epoch_early(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    (epoch / "_COMPLETE").write_text("")
    code, result = run_epochs(root, database_url, now=None)
    assert code == 0 and [p["name"] for p in result["processed"]] == ["2026-09-01"]
    assert (root / tree.UPLOAD_PROCESSED / "2026-09-01" / "_COMPLETE").exists()


def test_loose_files_are_gathered_into_a_timestamp_named_epoch(root: Path,
                                                              database_url: str) -> None:
    upload = root / tree.UPLOAD
    stamp = datetime(2026, 11, 28, 2, 0, 7, tzinfo=UTC).timestamp()
    for path in sorted((DATA / "v1.1-bulk").iterdir()):
        (upload / path.name).write_bytes(path.read_bytes())
        os.utime(upload / path.name, (stamp - 60, stamp - 60))
    os.utime(upload / "users.csv", (stamp, stamp))
    put_epoch(root, "2026-09-02", "v1.2-bulk")  # a directory beside them stays as it is

    code, result = run_epochs(root, database_url, now=None)
    assert result["pending"] == ["upload/ (loose files)", "2026-09-02"]
    assert (upload / "manifest.csv").is_file() and counts(database_url) == {}

    code, result = run_epochs(root, database_url)
    assert code == 0
    # Named after the newest mtime among the loose files, so a rerun after a crash picks the
    # same name; gathered first, then processed in name order with the rest.
    assert [p["name"] for p in result["processed"]] == ["2026-09-02", "20261128-020007"]
    assert sorted(p.name for p in upload.iterdir()) == []
    _, report = processing(root, "20261128-020007")
    assert report["rows"] == 28
    gathered = root / tree.UPLOAD_PROCESSED / "20261128-020007"
    assert sorted(p.name for p in gathered.iterdir()) == sorted(
        [p.name for p in (DATA / "v1.1-bulk").iterdir()] + [
            "processing.json", "processing.log", GATHERED_FROM])
    assert report["note"].startswith("gathered from loose files in upload/: ")


def test_loose_file_with_a_temporary_name_is_not_gathered(root: Path,
                                                          database_url: str) -> None:
    upload = root / tree.UPLOAD
    (upload / "users.csv.filepart").write_text("sourcedId\n")
    (upload / "notes.txt").write_text("hello\n")
    _, result = run_epochs(root, database_url,
                              now=_iso(time.time() + timedelta(days=1).total_seconds()))
    assert result["pending"] == ["upload/ (loose files)"]
    assert sorted(p.name for p in upload.iterdir()) == ["notes.txt", "users.csv.filepart"]


def test_loose_files_with_a_marker_are_gathered_without_waiting(root: Path,
                                                               database_url: str) -> None:
    upload = root / tree.UPLOAD
    for path in sorted((DATA / "v1.1-bulk").iterdir()):
        (upload / path.name).write_bytes(path.read_bytes())
    (upload / "_COMPLETE").touch()
    code, result = run_epochs(root, database_url, now=None)
    assert code == 0 and len(result["processed"]) == 1
    name = result["processed"][0]["name"]
    assert (root / tree.UPLOAD_PROCESSED / name / "_COMPLETE").exists()
    assert list(upload.iterdir()) == [] and counts(database_url)["users"] == 6
