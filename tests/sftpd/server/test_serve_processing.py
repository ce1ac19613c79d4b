"""A real `sftpd serve` and a real `sftpd process-epochs` on one tree: while the processor has
an epoch, nothing in it can be opened for writing, so nothing it moves to /upload-processed can
be written through a handle afterwards."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from sftpd import tree
from sftpd.epochs import processor
from tests.sftpd.epochs.conftest import DATA, put_epoch, run_epochs
from tests.sftpd.server.conftest import LOGIN, Keys, ServerProcess, start_server

EPOCH = "2026-09-01"


@pytest.fixture
def shared(tmp_path: Path, keys: Keys) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "data", keys, tmp_path / "audit.jsonl")
    yield srv
    assert srv.stop() == 0


def district(server: ServerProcess, keys: Keys) -> paramiko.SFTPClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", server.port, username=LOGIN, key_filename=str(keys.client),
                   look_for_keys=False, allow_agent=False)
    return client.open_sftp()


def test_no_write_handle_into_an_epoch_being_processed(
        shared: ServerProcess, keys: Keys, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = shared.root
    put_epoch(root, EPOCH, "v1.1-bulk")
    (root / tree.UPLOAD / "elsewhere").mkdir()
    (root / tree.UPLOAD / "elsewhere/extra.csv").write_text("sourcedId\n9\n")
    sftp = district(shared, keys)
    tried: dict[str, BaseException | None] = {}
    handles: list[paramiko.SFTPFile] = []
    real_checkpoint = processor.checkpoint

    def attack(label: str) -> None:
        # Between the processor's completeness check and its move, the district tries every
        # way of getting a write handle on (or a change into) the epoch.
        real_checkpoint(label)
        if label != "validated" or tried:
            return
        attempts = {
            "append to a data file": lambda: handles.append(
                sftp.open(f"/upload/{EPOCH}/users.csv", "ab")),
            "create processing.json": lambda: handles.append(
                sftp.open(f"/upload/{EPOCH}/processing.json", "wb")),
            "create a new file": lambda: handles.append(sftp.open(f"/upload/{EPOCH}/new.csv", "w")),
            "move a file in": lambda: sftp.rename("/upload/elsewhere/extra.csv",
                                                  f"/upload/{EPOCH}/extra.csv"),
            "mkdir inside": lambda: sftp.mkdir(f"/upload/{EPOCH}/sub"),
            "rename the epoch": lambda: sftp.rename(f"/upload/{EPOCH}", "/upload/renamed"),
            "truncate a file": lambda: sftp.truncate(f"/upload/{EPOCH}/users.csv", 0),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
            except OSError as exc:
                tried[name] = exc
            else:
                tried[name] = None

    monkeypatch.setattr(processor, "checkpoint", attack)
    code, result = run_epochs(root, database_url)
    assert tried, "the processor never reached the point the test attacks at"
    succeeded = [name for name, exc in tried.items() if exc is None]
    # Were any handle opened, it would now write into /upload-processed.
    for handle in handles:
        handle.write(b"rewritten after the move\n")
        handle.close()
    sftp.close()
    assert succeeded == [], f"not refused while processing: {succeeded}"
    assert all("being processed" in str(exc) for exc in tried.values()), tried
    assert code == 0 and [p["name"] for p in result["processed"]] == [EPOCH], result
    moved = root / tree.UPLOAD_PROCESSED / EPOCH
    assert sorted(p.name for p in moved.iterdir()) == sorted(
        [p.name for p in (DATA / "v1.1-bulk").iterdir()] + ["processing.json", "processing.log"])
    for original in (DATA / "v1.1-bulk").iterdir():
        assert (moved / original.name).read_bytes() == original.read_bytes()
    assert "rewritten" not in (moved / "processing.json").read_text()
    busy = [e for e in shared.events("request.denied") if e.get("reason") == "processing"]
    assert len(busy) == len(tried)


def test_an_epoch_with_a_write_handle_open_waits(shared: ServerProcess, keys: Keys,
                                                 database_url: str, tmp_path: Path) -> None:
    root = shared.root
    put_epoch(root, EPOCH, "v1.1-bulk")
    sftp = district(shared, keys)
    handle = sftp.open(f"/upload/{EPOCH}/late.csv", "w")  # opened, still being written
    code, result = run_epochs(root, database_url)
    assert result["processed"] == [] and EPOCH in result["pending"], result
    assert (root / tree.UPLOAD / EPOCH).is_dir()
    handle.write("sourcedId\n")
    handle.close()
    (root / tree.UPLOAD / EPOCH / "late.csv").unlink()
    sftp.close()
    code, result = run_epochs(root, database_url)
    assert code == 0 and [p["name"] for p in result["processed"]] == [EPOCH], result
    shutil.rmtree(root / tree.UPLOAD_PROCESSED / EPOCH)
