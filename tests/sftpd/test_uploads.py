"""The upload contract: a write lock held by one process is seen by another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sftpd.uploads import hold_write_lock, is_open_for_writing, is_temporary_name


def test_lock_held_by_another_process_is_seen(tmp_path: Path) -> None:
    target = tmp_path / "users.csv"
    target.write_text("x")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import os,sys,time; from sftpd.uploads import hold_write_lock;"
         f"fd=os.open({str(target)!r}, os.O_WRONLY); hold_write_lock(fd);"
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert is_open_for_writing(target)
    finally:
        holder.kill()
        holder.wait()
    # The kernel drops the lock with the process: a crashed server leaves no stale mark.
    assert not is_open_for_writing(target)


def test_closed_file_is_not_open_for_writing(tmp_path: Path) -> None:
    target = tmp_path / "a.csv"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    hold_write_lock(fd)
    os.close(fd)
    assert not is_open_for_writing(target)
    assert not is_open_for_writing(tmp_path / "missing.csv")


def test_temporary_names() -> None:
    assert is_temporary_name("users.csv.filepart")
    assert is_temporary_name("USERS.CSV.PART")
    assert not is_temporary_name("users.csv")
    assert not is_temporary_name("partners.csv")
