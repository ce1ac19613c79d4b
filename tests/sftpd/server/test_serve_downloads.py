"""The district's side of /downloads with the real `sftpd serve` and OpenSSH `sftp`: the newest
docviewer epoch (made by the real `sftpd docviewer` on a seeded database) and a published
prior-system archive downloaded and checked with `sha256sum -c`; every attempt to write,
rename or delete there refused with a permission error, the tree unchanged; the state
directories of `--download-directories` listed and empty."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from sftpd import tree
from sftpd.downloads.publish import COMPLETE, EPOCH_NAME
from tests.conftest import require_binary
from tests.sftpd.downloads.conftest import read_epoch, run_docviewer, seed_documents
from tests.sftpd.downloads.test_pdfs import make_pdf
from tests.sftpd.epochs.conftest import run_process
from tests.sftpd.server.conftest import Keys, ServerProcess, openssh_sftp, snapshot, start_server

STATE_DIRECTORIES = ("state-reports", "ohio_ems")
DOMAIN = "lincoln.k12.us"
ARCHIVE = {f"{DOMAIN}/students/S1/IEP 2019.pdf": make_pdf("S1 IEP 2019"),
           f"{DOMAIN}/students/S2/504.pdf": make_pdf("S2 504")}


def sftp_ok(server: ServerProcess, keys: Keys, batch: str) -> list[str]:
    """Run an sftp batch that must succeed; the output lines that are not echoed commands."""
    done = openssh_sftp(server, keys, batch)
    assert done.returncode == 0, done.stderr
    return [line.strip() for line in done.stdout.splitlines()
            if line.strip() and not line.startswith("sftp>")]


@pytest.mark.postgres
def test_district_downloads_the_newest_epoch_and_an_archive_and_cannot_change_downloads(
        tmp_path: Path, keys: Keys, database_url: str) -> None:
    require_binary("sha256sum")
    root = tmp_path / "data"
    seeded = seed_documents(database_url)
    server = start_server(root, keys, tmp_path / "audit.jsonl",
                          "--download-directories", ",".join(STATE_DIRECTORIES))
    try:
        key = tmp_path / "token-key"
        key.write_bytes(Fernet.generate_key() + b"\n")
        epochs = []
        for _ in range(2):
            made = run_docviewer(root, database_url, key)
            assert made.returncode == 0, made.stderr
            assert made.result is not None
            epochs.append(made.result["epoch"])
        assert epochs[1] > epochs[0]
        # The district uploads a prior-system archive as a zip and as a folder, as
        # docs/onboarding.md tells it to.
        made = tmp_path / "district-made"
        made.mkdir()
        with zipfile.ZipFile(made / "prior.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in ARCHIVE.items():
                archive.writestr(member, data)
        for member, data in ARCHIVE.items():
            (made / member).parent.mkdir(parents=True, exist_ok=True)
            (made / member).write_bytes(data)
        (made / "COMPLETE").touch()
        sftp_ok(server, keys, f"lcd {made}\n"
                              "mkdir /upload/20261201-010000\n"
                              "put prior.zip /upload/20261201-010000/\n"
                              "put COMPLETE /upload/20261201-010000/\n"
                              "mkdir /upload/20261202-010000\n"
                              f"put -r {DOMAIN} /upload/20261202-010000/{DOMAIN}\n"
                              "put COMPLETE /upload/20261202-010000/\n")
        imported = run_process(root, database_url, "--district-domain", DOMAIN,
                               "--formats", "prior-system-pdfs")
        assert imported.code == 0, (imported.stderr, imported.result)
        assert [p["name"] for p in imported.result["processed"]] == [  # type: ignore[index]
            "20261201-010000", "20261202-010000"]

        # The district takes the newest epoch that has COMPLETE, as SameGoal's guide says.
        listed = [Path(line).name for line in
                  sftp_ok(server, keys, "ls -1 /downloads/docviewer\n")]
        assert sorted(listed) == epochs
        newest = max(name for name in listed if EPOCH_NAME.match(name))
        assert sftp_ok(server, keys, f"ls -1 /downloads/docviewer/{newest}/{COMPLETE}\n")
        local = tmp_path / "district-side"
        local.mkdir()
        sftp_ok(server, keys, f"lcd {local}\nget -r /downloads/docviewer/{newest}\n"
                              "get /downloads/prior.zip\nget /downloads/prior.zip.sha256\n"
                              "get /downloads/20261202-010000.zip*\n")
        rows = read_epoch(local / newest)
        assert len(rows) == len(seeded.expected)
        for name in ("prior.zip", "20261202-010000.zip"):
            check = subprocess.run(["sha256sum", "-c", f"{name}.sha256"], cwd=local,
                                   capture_output=True, text=True, check=False)
            assert check.returncode == 0 and f"{name}: OK" in check.stdout, check
        assert (local / "prior.zip").read_bytes() == (made / "prior.zip").read_bytes()
        with zipfile.ZipFile(local / "20261202-010000.zip") as folder_zip:
            assert {n: folder_zip.read(n) for n in folder_zip.namelist()} == ARCHIVE

        listening = server.events("server.listening")
        assert listening[0]["download_directories"] == list(STATE_DIRECTORIES)
        # The state directories: listed, present and empty.
        top = [Path(line).name for line in sftp_ok(server, keys, "ls -1 /downloads\n")]
        assert sorted(top) == sorted(["backups", "docviewer", "pdfs", "prior.zip",
                                      "prior.zip.sha256", "20261202-010000.zip",
                                      "20261202-010000.zip.sha256", *STATE_DIRECTORIES])
        for name in STATE_DIRECTORIES:
            listed = sftp_ok(server, keys, f"ls -1a /downloads/{name}\n")
            assert [line.rsplit("/", 1)[-1] for line in listed] == [".", ".."]

        # Nothing under /downloads can be written, renamed or deleted.
        source = tmp_path / "payload.txt"
        source.write_text("district data\n" * 100_000)  # larger than anything there (reput)
        epoch = f"/downloads/docviewer/{newest}"
        attempts = {
            "put a new file": f"put {source} /downloads/new.txt",
            "overwrite the archive": f"put {source} /downloads/prior.zip",
            "overwrite the checksum": f"put {source} /downloads/prior.zip.sha256",
            "write into an epoch": f"put {source} {epoch}/documents.csv",
            "write into a state directory": f"put {source} /downloads/state-reports/x.txt",
            "append to the archive": f"reput {source} /downloads/prior.zip",
            "remove the archive": "rm /downloads/prior.zip",
            "remove COMPLETE": f"rm {epoch}/COMPLETE",
            "rename the archive": "rename /downloads/prior.zip /downloads/other.zip",
            "move the archive into upload": "rename /downloads/prior.zip /upload/prior.zip",
            "rename an epoch": f"rename {epoch} /downloads/docviewer/19990101-000000",
            "make a directory": "mkdir /downloads/mine",
            "make a directory in a state directory": "mkdir /downloads/ohio_ems/mine",
            "remove a state directory": "rmdir /downloads/ohio_ems",
            "remove an epoch": f"rmdir {epoch}",
            "change the archive's mode": "chmod 666 /downloads/prior.zip",
            "link to the archive": "ln -s /downloads/prior.zip /downloads/link.zip",
        }
        before = snapshot(root / tree.DOWNLOADS)
        for what, command in attempts.items():
            refused = openssh_sftp(server, keys, command + "\n")
            assert refused.returncode != 0, what
            assert "Permission denied" in refused.stderr, (what, refused.stderr)
        assert snapshot(root / tree.DOWNLOADS) == before
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "backups", "pdfs", "x" * 64,
                                  "café", "a:b", "archive.zip", "-dash"])
def test_a_bad_state_directory_name_is_bad_usage(tmp_path: Path, keys: Keys,
                                                 name: str) -> None:
    root = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "sftpd", "serve", "--root", str(root), "--login", "lincoln",
         "--authorized-keys", str(keys.authorized_keys), "--port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SFTPD_DOWNLOAD_DIRECTORIES": f"ohio,{name}"})
    assert done.returncode == 2, done.stderr
    assert f"download directory {name!r}" in done.stderr
    assert not root.exists()  # nothing was attempted


def test_an_existing_state_directory_is_kept_and_a_file_in_its_place_stops_the_start(
        tmp_path: Path, keys: Keys) -> None:
    root = tmp_path / "data"
    tree.ensure_tree(root)
    kept = root / tree.DOWNLOADS / "ohio_ems"
    kept.mkdir()
    (kept / "report.csv").write_text("written by an integration\n")
    (root / tree.DOWNLOADS / "state-reports").write_text("not a directory\n")
    done = subprocess.run(
        [sys.executable, "-m", "sftpd", "serve", "--root", str(root), "--login", "lincoln",
         "--host-key", str(keys.host_ed25519), "--authorized-keys", str(keys.authorized_keys),
         "--port", "0", "--metrics-port", "0", "--download-directories",
         "ohio_ems,state-reports"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "downloads/state-reports exists and is not a directory" in done.stderr
    assert (kept / "report.csv").read_text() == "written by an integration\n"
