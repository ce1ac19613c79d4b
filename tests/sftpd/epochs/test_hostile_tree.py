"""Hostile trees planted straight on the volume (not through the server, whose checks are only
one layer): the real `sftpd process-epochs` stays inside the epochs it owns, bounds its work and
memory, and every run ends with a result line."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sftpd import tree
from sftpd.epochs.names import GATHERED_FROM
from sftpd.formats import archive
from tests.sftpd.epochs.conftest import DATA, processing, put_epoch, run_process

# Many real processor runs each: minutes on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(900)

GATHER = ".sftpd-gather-"


def _put_loose(root: Path, dataset: str, when: datetime) -> list[str]:
    """Upload a set's files loose into upload/, all modified at `when`."""
    stamp = when.timestamp()
    names = []
    for source in sorted((DATA / dataset).iterdir()):
        target = root / tree.UPLOAD / source.name
        target.write_bytes(source.read_bytes())
        os.utime(target, (stamp, stamp))
        names.append(source.name)
    return names


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_planted_gather_staging_never_moves_anything_out_of_its_place(root: Path,
                                                                       database_url: str) -> None:
    backups = root / tree.BACKUPS
    (backups / "2026-11-01.dump").write_bytes(b"the district's backup")
    processed = root / tree.UPLOAD_PROCESSED / "2026-10-01"
    processed.mkdir()
    (processed / "processing.json").write_text('{"outcome": "Succeeded"}\n')
    before = {"backups": _snapshot(backups)}
    upload = root / tree.UPLOAD
    # A staging directory with a list naming paths outside upload/ (the parent that the
    # first rename would need exists), one that is a link to downloads/, and loose files.
    (upload / "downloads").mkdir()
    planted = upload / f"{GATHER}20260101-000000"
    planted.mkdir()
    (planted / ".sftpd-gather-list").write_text(
        "../downloads/backups\n../upload-processed\n../../downloads/backups\n.\n..\n")
    (upload / f"{GATHER}20260102-000000").symlink_to(root / tree.DOWNLOADS)
    # The same as an `_auto` staging (with the COMPLETE gathering would put there).
    planted_auto = upload / f"{GATHER}auto-20260103-000000"
    planted_auto.mkdir()
    (planted_auto / ".sftpd-gather-list").write_text("../downloads/backups\nusers_auto.csv\n")
    (planted_auto / "COMPLETE").write_bytes(b"")
    loose = _put_loose(root, "v1.1-bulk", datetime(2026, 11, 28, 2, 0, 7, tzinfo=UTC))
    (upload / "link-to-backups").symlink_to(backups)

    run = run_process(root, database_url)

    assert run.result is not None, run.stderr
    assert _snapshot(backups) == before["backups"]
    assert (processed / "processing.json").read_text() == '{"outcome": "Succeeded"}\n'
    assert not (upload / "upload-processed").exists()
    assert not (upload / "downloads" / "backups").exists()
    assert (root / tree.DOWNLOADS).is_dir() and not (root / tree.DOWNLOADS).is_symlink()
    # The planted staging is not the processor's: left alone and named for staff.
    assert sorted(p.name for p in planted.iterdir()) == [".sftpd-gather-list"]
    assert (upload / f"{GATHER}20260102-000000").is_symlink()
    assert f"{GATHER}20260101-000000" in run.result["unrecognized"]
    assert sorted(p.name for p in planted_auto.iterdir()) == [".sftpd-gather-list", "COMPLETE"]
    assert f"{GATHER}auto-20260103-000000" in run.result["unrecognized"]
    assert "not made by the processor" in run.result["message"]
    # The loose files were gathered and imported as usual, beside the planted staging.
    assert [(p["name"], p["outcome"]) for p in run.result["processed"]] == [
        ("20261128-020007", "Succeeded")]
    gathered = root / tree.UPLOAD_PROCESSED / "20261128-020007"
    assert sorted({*loose, GATHERED_FROM}) == sorted(p.name for p in gathered.iterdir()
                                        if not p.name.startswith("processing."))
    assert (upload / "link-to-backups").is_symlink()


def test_a_file_named_like_the_staging_directory_does_not_stop_processing(
        root: Path, database_url: str) -> None:
    upload = root / tree.UPLOAD
    # The name the processor gives its staging for these loose files, taken by a plain file.
    _put_loose(root, "v1.1-bulk", datetime(2026, 11, 28, 2, 0, 7, tzinfo=UTC))
    (upload / f"{GATHER}20261128-020007").write_bytes(b"not a directory")
    # (the delta's name in the districts' form, like the gathered one's: it sorts after it)
    put_epoch(root, "20261129-000000", "v1.1-delta")

    first = run_process(root, database_url)
    second = run_process(root, database_url)

    assert first.result is not None, first.stderr
    assert [(p["name"], p["outcome"]) for p in first.result["processed"]] == [
        ("20261128-020007", "Succeeded"), ("20261129-000000", "Succeeded")]
    assert first.result["outcome"] == "NeedsAttention"
    assert f"{GATHER}20261128-020007" in first.result["unrecognized"]
    assert second.result is not None and second.result["outcome"] == "NeedsAttention"
    assert (upload / f"{GATHER}20261128-020007").read_bytes() == b"not a directory"


def test_a_directory_named_processing_log_is_set_aside_and_the_epoch_moves(
        root: Path, database_url: str, tmp_path: Path) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    (epoch / "processing.log").mkdir()
    (epoch / "processing.log" / "mine.txt").write_text("the district's own notes")
    (epoch / "processing.json").mkdir()
    # A planted link where the processor writes its temporary file must not be followed.
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    (epoch / "processing.log.sftpd-writing").symlink_to(outside)
    put_epoch(root, "2026-09-02", "v1.1-delta")

    run = run_process(root, database_url)

    assert run.result is not None, run.stderr
    assert [(p["name"], p["outcome"]) for p in run.result["processed"]] == [
        ("2026-09-01", "Succeeded"), ("2026-09-02", "Succeeded")]
    log, report = processing(root, "2026-09-01")
    assert "Outcome:      Succeeded" in log and report["rows"] == 28
    moved = root / tree.UPLOAD_PROCESSED / "2026-09-01"
    kept = [p for p in moved.iterdir() if p.name.startswith("processing.log.")]
    assert [p.name for p in kept] == ["processing.log.sftpd-displaced"]
    assert (kept[0] / "mine.txt").read_text() == "the district's own notes"
    assert (moved / "processing.json.sftpd-displaced").is_dir()
    assert outside.read_text() == "untouched"
    assert list((root / tree.UPLOAD).iterdir()) == []


def test_non_utf8_names_are_skipped_or_shown_escaped_and_the_run_completes(
        root: Path, database_url: str) -> None:
    upload = os.fsencode(root / tree.UPLOAD)
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    with open(os.path.join(os.fsencode(epoch), b"notes-\xff.txt"), "wb") as f:
        f.write(b"a file whose name is not UTF-8")
    loose = os.path.join(upload, b"caf\xe9.csv")
    with open(loose, "wb") as f:
        f.write(b"a,b\n")
    stamp = datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    os.utime(loose, (stamp, stamp))
    bad_epoch = os.path.join(upload, b"2026-09-03-\xff")
    os.mkdir(bad_epoch)
    with open(os.path.join(bad_epoch, b"users.csv"), "wb") as f:
        f.write(b"x\n")

    run = run_process(root, database_url)

    assert run.result is not None, run.stderr
    assert "Traceback" not in run.stderr
    assert [(p["name"], p["outcome"]) for p in run.result["processed"]] == [
        ("2026-09-01", "Succeeded")]
    _, report = processing(root, "2026-09-01")
    assert "notes-\\xff.txt is not part of OneRoster; ignored" in [
        w["message"] for w in report["warnings"]]
    # The bad epoch name is refused (named escaped), the loose file gathered, nothing lost.
    assert "2026-09-03-\\xff" in run.result["unrecognized"]
    assert "name is not valid UTF-8" in run.result["message"]
    assert os.path.isdir(bad_epoch)
    assert "20261128-000000" in run.result["unrecognized"]
    with open(os.path.join(upload, b"20261128-000000", b"caf\xe9.csv"), "rb") as f:
        assert f.read() == b"a,b\n"


@pytest.fixture
def deep(root: Path) -> Iterator[Path]:
    """An epoch directory removed with rm(1) afterwards: Python's rmtree (pytest's cleanup
    of its temporary directories included) recurses and fails on a tree 1,000 deep."""
    path = root / tree.UPLOAD / "2026-09-02-deep"
    yield path
    subprocess.run(["rm", "-rf", "--", str(root)], check=True)


def test_an_epoch_a_thousand_folders_deep_is_refused_and_the_others_processed(
        root: Path, database_url: str, deep: Path) -> None:
    put_epoch(root, "2026-09-01", "v1.1-bulk")
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1000):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("x.csv", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)
    put_epoch(root, "2026-09-03", "v1.1-delta")
    wide = root / tree.UPLOAD / "2026-09-04-wide"
    wide.mkdir()
    for n in range(60):
        (wide / f"{n}.csv").write_text("x\n")
        (root / tree.UPLOAD / f"loose-{n}.csv").write_text("x\n")

    run = run_process(root, database_url, "--max-tree-entries", "50")

    assert run.result is not None, run.stderr
    assert "RecursionError" not in run.stderr
    assert [(p["name"], p["outcome"]) for p in run.result["processed"]] == [
        ("2026-09-01", "Succeeded"), ("2026-09-03", "Succeeded")]
    assert run.result["unrecognized"] == ["upload/ (loose files)", "2026-09-02-deep",
                                          "2026-09-04-wide"]
    assert "folders nested deeper than 32" in run.result["message"]
    assert "more than 50 files and folders" in run.result["message"]
    assert "more than 50 loose files" in run.result["message"]
    assert deep.is_dir() and wide.is_dir()
    assert len(list((root / tree.UPLOAD).glob("loose-*.csv"))) == 60


def _zip_set(path: Path, extra: list[tuple[zipfile.ZipInfo, bytes]],
             manifest: bytes | None = None) -> None:
    """The v1.1 bulk set zipped under export/, plus hostile members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for source in sorted((DATA / "v1.1-bulk").iterdir()):
            data = manifest if manifest is not None and source.name == "manifest.csv" \
                else source.read_bytes()
            out.writestr(f"export/{source.name}", data, compresslevel=9)
        for info, data in extra:
            out.writestr(info, data)


def _symlink_member(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def test_hostile_archives_are_refused_naming_the_member_with_bounded_memory(
        root: Path, database_url: str) -> None:
    upload = root / tree.UPLOAD
    names = {"2026-09-01-bomb", "2026-09-02-dotdot", "2026-09-03-absolute", "2026-09-04-link",
             "2026-09-05-crowd"}
    for name in names:
        (upload / name).mkdir()
    # 40 MB of manifest rows in a ~40 KB zip: read whole, it took gigabytes.
    bomb = (b"propertyName,value\noneroster.version,1.1\nfile.orgs,bulk\n"
            + b"x,y\n" * 10_000_000)
    _zip_set(upload / "2026-09-01-bomb" / "set.zip", [], manifest=bomb)
    assert (upload / "2026-09-01-bomb" / "set.zip").stat().st_size < 100_000
    _zip_set(upload / "2026-09-02-dotdot" / "set.zip",
             [(zipfile.ZipInfo("export/../../downloads/evil.csv"), b"x\n")])
    _zip_set(upload / "2026-09-03-absolute" / "set.zip",
             [(zipfile.ZipInfo("/etc/evil.csv"), b"x\n")])
    _zip_set(upload / "2026-09-04-link" / "set.zip",
             [_symlink_member("export/notes.csv", "/etc/passwd")])
    _zip_set(upload / "2026-09-05-crowd" / "set.zip",
             [(zipfile.ZipInfo(f"junk/{n}.txt"), b"") for n in range(archive.MAX_MEMBERS)])
    put_epoch(root, "2026-09-06", "v1.1-bulk")

    run = run_process(root, database_url)

    assert run.result is not None, run.stderr
    print(f"peak RSS of the processor: {run.peak_rss_mib:.0f} MiB")
    assert run.peak_rss_mib < 250, run.peak_rss_mib
    outcomes = {p["name"]: p["outcome"] for p in run.result["processed"]}
    assert outcomes == {"2026-09-01-bomb": "Failed", "2026-09-02-dotdot": "Failed",
                        "2026-09-03-absolute": "Failed", "2026-09-04-link": "Failed",
                        "2026-09-06": "Succeeded"}
    expected = {
        "2026-09-01-bomb": f"set.zip: export/manifest.csv expands to {len(bomb):,} bytes",
        "2026-09-02-dotdot": "set.zip: export/../../downloads/evil.csv has an unsafe path",
        "2026-09-03-absolute": "set.zip: /etc/evil.csv has an unsafe path",
        "2026-09-04-link": "set.zip: export/notes.csv is a symbolic link",
    }
    for name, message in expected.items():
        log, report = processing(root, name)
        assert message in log, log
        assert report["rows"] == 0
    # Too many members to look at: not recognized, left for staff, not read.
    assert run.result["unrecognized"] == ["2026-09-05-crowd"]
    assert (upload / "2026-09-05-crowd" / "set.zip").is_file()
    assert shutil.disk_usage(root).free > 0


def test_a_huge_manifest_or_header_line_is_read_only_up_to_its_bound(root: Path,
                                                                    database_url: str) -> None:
    manifest = put_epoch(root, "2026-09-01", "v1.1-bulk") / "manifest.csv"
    manifest.write_bytes(manifest.read_bytes() + b"x,y\n" * 20_000)
    users = put_epoch(root, "2026-09-02", "v1.1-bulk") / "users.csv"
    users.write_bytes(b",".join([b"metadata.x"] * 20_000) + b"\n" + users.read_bytes())

    run = run_process(root, database_url)

    assert run.result is not None, run.stderr
    assert [(p["name"], p["outcome"]) for p in run.result["processed"]] == [
        ("2026-09-01", "Failed"), ("2026-09-02", "Failed")]
    _, first = processing(root, "2026-09-01")
    assert [(p["file"], p["message"]) for p in first["problems"]] == [
        ("manifest.csv", "the manifest is larger than 65,536 bytes (a manifest has a few "
         "dozen lines)")]
    _, second = processing(root, "2026-09-02")
    assert [(p["file"], p["line"], p["message"]) for p in second["problems"]] == [
        ("users.csv", 1, "the header line is longer than 65,536 bytes")]
