"""A district following SameGoal's upload guide to the letter, through the real server with
OpenSSH's sftp, then the real `sftpd process-epochs` command: both ways are imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpd import tree
from tests.sftpd.epochs.conftest import processing, scalar
from tests.sftpd.server.conftest import Keys, ServerProcess, keys, openssh_sftp, start_server

__all__ = ["keys"]  # the server tests' key fixture, used here by name

DATA = Path(__file__).resolve().parents[2] / "data" / "generic-csv"


@pytest.fixture
def server(root: Path, keys: Keys, tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `sftpd serve` over the same tree the processor works on."""
    srv = start_server(root, keys, tmp_path / "audit.jsonl")
    yield srv
    srv.stop()


def process_epochs(root: Path, database_url: str, tmp_path: Path) -> dict[str, Any]:
    """The CronJob's command in its own process, on the real clock with the default quiet
    time (300 s): what is processed now was not waiting for it."""
    result_file = tmp_path / "result.json"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SFTPD_")},
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "sftpd", "process-epochs", "--root", str(root),
         "--database-url", database_url, "--result-file", str(result_file)],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def test_documented_epoch_and_a_loose_auto_file_are_both_imported(
        root: Path, database_url: str, server: ServerProcess, keys: Keys,
        tmp_path: Path) -> None:
    marker = tmp_path / "COMPLETE"
    marker.write_bytes(b"")
    files = sorted((DATA / "district").iterdir())
    # SameGoal's steps: make the epoch directory, put the CSV files in it, then put an empty
    # COMPLETE last.
    batch = ["mkdir /upload/20261128-020000"]
    batch += [f"put {p} /upload/20261128-020000/{p.name}" for p in files]
    batch += [f"put {marker} /upload/20261128-020000/COMPLETE"]
    done = openssh_sftp(server, keys, "\n".join(batch) + "\n")
    assert done.returncode == 0, done.stderr

    result = process_epochs(root, database_url, tmp_path)
    assert [(p["name"], p["outcome"], p["format"]) for p in result["processed"]] == [
        ("20261128-020000", "Succeeded", "generic-csv")]
    assert scalar(database_url, "SELECT count(*) FROM generic_csv.students") == 6

    # A district that cannot make a directory: users_auto.csv straight into /upload/.
    users = tmp_path / "users_auto.csv"
    users.write_text("Email,Last Name,First Name,Roles,Buildings,Deleted\n"
                     "auto@applegrove.org,Auto,Ann,Principal,West Elementary,\n")
    done = openssh_sftp(server, keys, f"put {users} /upload/users_auto.csv\n")
    assert done.returncode == 0, done.stderr
    result = process_epochs(root, database_url, tmp_path)
    [auto] = result["processed"]
    assert auto["outcome"] == "Succeeded" and auto["format"] == "generic-csv"
    name = auto["name"]
    assert len(name) == 15 and name[8] == "-" and name.replace("-", "").isdigit()
    epoch = root / tree.UPLOAD_PROCESSED / name
    assert (epoch / "users.csv").read_bytes() == users.read_bytes()
    assert (epoch / "COMPLETE").read_bytes() == b""
    log, report = processing(root, name)
    assert report["note"] == ("gathered from loose files in upload/: users_auto.csv "
                              "(as users.csv)")
    assert "users_auto.csv (as users.csv)" in log
    assert scalar(database_url, "SELECT last_name FROM generic_csv.users WHERE email = "
                                "'auto@applegrove.org'") == "Auto"
    assert list((root / tree.UPLOAD).iterdir()) == []
