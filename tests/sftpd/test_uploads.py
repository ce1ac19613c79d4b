"""The upload contract: a write lock held by one process is seen by another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sftpd.uploads import (
    claimed,
    hold_write_lock,
    is_open_for_writing,
    is_temporary_name,
    share_epoch,
)


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


def test_epoch_claim_and_share_exclude_each_other(tmp_path: Path) -> None:
    epoch = tmp_path / "2026-12-01"
    epoch.mkdir()
    server_fd = os.open(epoch, os.O_RDONLY | os.O_DIRECTORY)
    try:
        share_epoch(server_fd)  # the server has a write handle open in the epoch
        with claimed(epoch) as ours:
            assert not ours
        os.close(server_fd)
        server_fd = -1
        with claimed(epoch) as ours:
            assert ours
            # While the processor holds it, the server cannot start a change there.
            fd = os.open(epoch, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with pytest.raises(BlockingIOError):
                    share_epoch(fd)
            finally:
                os.close(fd)
    finally:
        if server_fd >= 0:
            os.close(server_fd)
    with claimed(tmp_path / "gone") as ours:
        assert not ours
