"""Prior-system archives through the real `sftpd process-epochs` on a real tree and PostgreSQL:
a valid zip and a valid directory imported once and published with a checksum; an unknown
student, a wrong domain, a non-PDF member, zip-slip and zip-bomb members each refused by name,
with nothing imported and nothing published; SIGKILL at every step after the commit."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sftpd import tree
from sftpd.downloads.contract import contract_sql
from sftpd.epochs.checkpoints import KILL_AT_ENV
from sftpd.formats import Problem, registered_formats
from sftpd.formats.prior_system_pdfs import FORM, PriorSystemPdfsFormat, pdf_problem
from tests.conftest import require_binary
from tests.sftpd.downloads.test_pdfs import make_pdf
from tests.sftpd.epochs.conftest import Run, processing, run_process

pytestmark = pytest.mark.postgres
DOMAIN = "lincoln.k12.us"
STUDENTS = (("S1", False), ("S2", False), ("S3", True))  # S3 is deleted


def layout(files: dict[str, bytes], domain: str = DOMAIN) -> dict[str, bytes]:
    return {f"{domain}/students/{name}": data for name, data in files.items()}


VALID = layout({"S1/IEP 2019.pdf": make_pdf("S1 IEP 2019"),
                "S1/Evaluation.PDF": make_pdf("S1 evaluation"),
                "S2/504 plan.pdf": make_pdf("S2 504")})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "district"
    tree.ensure_tree(path)
    return path


@pytest.fixture
def db(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(contract_sql().encode())
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO documents.students VALUES (%s, %s)", STUDENTS)
    return database_url


def put_zip(root: Path, epoch: str, name: str, members: dict[str, bytes],
            deflate: bool = True) -> Path:
    folder = root / tree.UPLOAD / epoch
    folder.mkdir()
    path = folder / name
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    (folder / "COMPLETE").touch()
    return path


def put_directory(root: Path, epoch: str, files: dict[str, bytes]) -> Path:
    folder = root / tree.UPLOAD / epoch
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / "COMPLETE").touch()
    return folder


def run(root: Path, url: str, *extra: str, env: dict[str, str] | None = None) -> Run:
    if env:
        os.environ.update(env)
    try:
        return run_process(root, url, "--district-domain", DOMAIN, *extra)
    finally:
        for key in env or {}:
            os.environ.pop(key)


def documents(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT student_id, form, start_date, end_date, complete, deleted, "
                    "file_name, pdf FROM documents.documents ORDER BY id")
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def downloads_listing(root: Path) -> list[str]:
    """Every entry directly in downloads/, hidden ones included."""
    return sorted(p.name for p in (root / tree.DOWNLOADS).iterdir())


OWN_DOWNLOADS = ["backups", "docviewer", "pdfs"]


def assert_refused(root: Path, url: str, run_: Run, epoch: str, *expected: str) -> str:
    """Failed, each expected text in processing.log and processing.json, nothing imported,
    nothing published; the log's text."""
    assert run_.code == 1, run_.stderr
    assert run_.result is not None and run_.result["outcome"] == "Failed"
    log, report = processing(root, epoch)
    assert report["outcome"] == "Failed" and report["format"] == "prior-system-pdfs"
    problems = "\n".join(Problem(p["message"], p["file"], p["line"]).describe()
                         for p in report["problems"])
    assert report["errors"] == len(report["problems"])
    for text in expected:
        assert text in log, log
        assert text in problems, problems
    assert "Nothing was imported" in log
    assert documents(url) == []
    assert downloads_listing(root) == OWN_DOWNLOADS
    assert "published" not in report
    assert not [e for e in run_.events if e["event"] == "epoch.published"]
    return log


def check_published(root: Path, name: str) -> bytes:
    """downloads/<name> and its .sha256: read-only, and `sha256sum -c` passes on them."""
    require_binary("sha256sum")
    downloads = root / tree.DOWNLOADS
    data = (downloads / name).read_bytes()
    line = (downloads / f"{name}.sha256").read_text()
    assert line == f"{hashlib.sha256(data).hexdigest()}  {name}\n"
    for path in (downloads / name, downloads / f"{name}.sha256"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
    check = subprocess.run(["sha256sum", "-c", f"{name}.sha256"], cwd=downloads,
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0 and f"{name}: OK" in check.stdout, check
    assert downloads_listing(root) == sorted([*OWN_DOWNLOADS, name, f"{name}.sha256"])
    return data


def assert_imported(url: str, files: dict[str, bytes]) -> None:
    """Each PDF once, as a complete "Prior System" document dated today (UTC), name kept."""
    require_binary("qpdf")
    today = datetime.now(UTC).date()
    rows = documents(url)
    got = sorted((r["student_id"], r["file_name"], bytes(r["pdf"])) for r in rows)
    want = sorted((rel.split("/")[2], rel.split("/")[3], data) for rel, data in files.items())
    assert got == want
    for row in rows:
        assert row["form"] == FORM and row["complete"] and not row["deleted"]
        assert row["start_date"] == row["end_date"]
        assert row["start_date"] in (today, date.fromordinal(today.toordinal() - 1))
    for index, (_, _, pdf) in enumerate(got):
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"prior-{os.getpid()}-{index}.pdf"
        path.write_bytes(pdf)
        try:
            check = subprocess.run(["qpdf", "--check", str(path)], capture_output=True,
                                   text=True, check=False)
        finally:
            path.unlink()
        assert check.returncode == 0, check.stdout + check.stderr


def test_a_valid_zip_is_imported_once_and_published_with_its_checksum(
        root: Path, db: str) -> None:
    uploaded = put_zip(root, "20261201-010000", "lincoln-prior.zip", VALID).read_bytes()
    # What a run killed while publishing another epoch's archive left (removed, never shown).
    (root / tree.DOWNLOADS / ".incomplete-older.zip").write_bytes(b"PK half")
    first = run(root, db)
    assert first.code == 0, (first.stderr, first.result)
    assert first.result is not None and first.result["outcome"] == "Succeeded"
    assert first.result["processed"][0]["format"] == "prior-system-pdfs"
    assert_imported(db, VALID)
    assert check_published(root, "lincoln-prior.zip") == uploaded
    log, report = processing(root, "20261201-010000")
    digest = hashlib.sha256(uploaded).hexdigest()
    assert f"Published:    downloads/lincoln-prior.zip (sha256 {digest})" in log
    assert report["published"] == {"file": "downloads/lincoln-prior.zip", "sha256": digest}
    assert report["files"] == [{"file": "lincoln-prior.zip", "mode": "add", "rows": 3,
                                "added": 3, "changed": 0, "deleted": 0}]
    published = [e for e in first.events if e["event"] == "epoch.published"]
    assert [(e["file"], e["sha256"]) for e in published] == [
        ("downloads/lincoln-prior.zip", digest)]

    # The same archive again (another epoch, same name): refused, nothing imported twice.
    put_zip(root, "20261202-010000", "lincoln-prior.zip", VALID)
    again = run(root, db)
    assert again.code == 1
    log, _ = processing(root, "20261202-010000")
    assert "downloads/lincoln-prior.zip is already published" in log
    assert len(documents(db)) == 3
    assert check_published(root, "lincoln-prior.zip") == uploaded


def test_a_zip_with_backslashes_as_windows_powershell_makes_it_is_read_alike(
        root: Path, db: str) -> None:
    members = {name.replace("/", "\\"): data for name, data in VALID.items()}
    put_zip(root, "20261201-020000", "windows.zip", members)
    result = run(root, db)
    assert result.code == 0, (result.stderr, result.result)
    assert_imported(db, VALID)
    check_published(root, "windows.zip")


def test_a_valid_directory_is_imported_and_published_as_a_zip_of_it(
        root: Path, db: str) -> None:
    junk = {f"{DOMAIN}/.DS_Store": b"\0\0\0\1Bud1", ".DS_Store": b"\0\0\0\1Bud1"}
    put_directory(root, "20261203-020000", {**VALID, **junk})
    result = run(root, db)
    assert result.code == 0, (result.stderr, result.result)
    assert_imported(db, VALID)
    data = check_published(root, "20261203-020000.zip")
    with zipfile.ZipFile(root / tree.DOWNLOADS / "20261203-020000.zip") as archive:
        assert archive.testzip() is None
        assert {n: archive.read(n) for n in archive.namelist()} == VALID
    log, _ = processing(root, "20261203-020000")
    assert f"{DOMAIN}/.DS_Store: left out" in log  # a warning, not an error
    # Publishing again builds the same bytes from the same directory, so it is kept as it is
    # (what a rerun after a crash between the commit and the move does).
    fmt = PriorSystemPdfsFormat(DOMAIN)
    again = fmt.publish(root / tree.UPLOAD_PROCESSED / "20261203-020000")
    assert again.sha256 == hashlib.sha256(data).hexdigest()
    assert check_published(root, "20261203-020000.zip") == data


def test_documents_as_a_view_are_imported_through_it(root: Path, database_url: str) -> None:
    """A database whose documents.documents is an updatable view (the contract allows one)
    gets the PDFs through INSERTs into the view instead of COPY, which a view refuses."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA documents")
        conn.execute("CREATE TABLE documents.students (student_id text PRIMARY KEY, "
                     "deleted boolean NOT NULL DEFAULT false)")
        conn.execute("INSERT INTO documents.students VALUES ('S1', false), ('S2', false)")
        conn.execute("CREATE TABLE documents.kept (id bigint GENERATED BY DEFAULT AS IDENTITY,"
                     " student_id text, form text, start_date date, end_date date, "
                     "complete boolean, deleted boolean NOT NULL DEFAULT false, file_name text,"
                     " pdf bytea)")
        conn.execute("CREATE VIEW documents.documents AS SELECT * FROM documents.kept")
    put_zip(root, "20261203-030000", "prior.zip", VALID)
    result = run(root, database_url)
    assert result.code == 0, (result.stderr, result.result)
    assert_imported(database_url, VALID)


def test_an_unknown_or_deleted_student_fails_the_whole_archive(root: Path, db: str) -> None:
    members = {**VALID, **layout({"S9/old.pdf": make_pdf("nobody"),
                                  "S3/gone.pdf": make_pdf("deleted")})}
    put_zip(root, "20261204-010000", "prior.zip", members)
    assert_refused(root, db, run(root, db), "20261204-010000",
                   f"prior.zip: {DOMAIN}/students/S9/: student 'S9' does not exist",
                   f"prior.zip: {DOMAIN}/students/S3/: student 'S3' is deleted")


def test_a_wrong_domain_is_refused(root: Path, db: str) -> None:
    put_directory(root, "20261204-020000", layout(
        {"S1/a.pdf": make_pdf("a")}, domain="washington.k12.us"))
    assert_refused(root, db, run(root, db), "20261204-020000",
                   "washington.k12.us/: the top directory must be the district's domain "
                   "'lincoln.k12.us', not 'washington.k12.us'")


def test_no_domain_configured_is_refused(root: Path, db: str) -> None:
    put_zip(root, "20261204-030000", "prior.zip", VALID)
    refused = run_process(root, db)  # no --district-domain
    assert_refused(root, db, refused, "20261204-030000",
                   "the district's domain is not configured (--district-domain, "
                   "SFTPD_DISTRICT_DOMAIN)")


def test_every_member_that_is_not_a_pdf_is_named(root: Path, db: str) -> None:
    whole = make_pdf("cut short")
    members = {**VALID, **layout({
        "S1/notes.pdf": b"just some text, not a PDF\n",
        "S1/cut.pdf": whole[: len(whole) // 2],
        "S2/letter.docx": b"PK\3\4 a word document",
        "S2/deeper/x.pdf": make_pdf("too deep"),
    })}
    put_zip(root, "20261205-010000", "prior.zip", members)
    assert_refused(
        root, db, run(root, db), "20261205-010000",
        f"{DOMAIN}/students/S1/notes.pdf: not a PDF (no %PDF- header)",
        f"{DOMAIN}/students/S1/cut.pdf: not a whole PDF (no %%EOF at the end: cut short?)",
        f"{DOMAIN}/students/S2/letter.docx: not a PDF file name (*.pdf)",
        f"{DOMAIN}/students/S2/deeper/x.pdf: a folder inside a student's folder")


def test_zip_slip_members_are_refused_and_nothing_is_written_outside(
        root: Path, db: str, tmp_path: Path) -> None:
    folder = root / tree.UPLOAD / "20261206-010000"
    folder.mkdir()
    pdf = make_pdf("evil")
    with zipfile.ZipFile(folder / "prior.zip", "w") as archive:
        archive.writestr(f"{DOMAIN}/students/S1/good.pdf", make_pdf("good"))
        archive.writestr(f"{DOMAIN}/students/S1/../../../../escaped.pdf", pdf)
        archive.writestr("/etc/absolute.pdf", pdf)
        link = zipfile.ZipInfo(f"{DOMAIN}/students/S1/link.pdf")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(f"{DOMAIN}/students/S1/good.pdf", pdf)
    (folder / "COMPLETE").touch()
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert_refused(root, db, run(root, db), "20261206-010000",
                   f"{DOMAIN}/students/S1/../../../../escaped.pdf has an unsafe path",
                   "/etc/absolute.pdf has an unsafe path",
                   f"{DOMAIN}/students/S1/link.pdf is a symbolic link",
                   f"{DOMAIN}/students/S1/good.pdf appears more than once in the archive")
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                   if "upload-processed" not in str(p))
    assert [p for p in after if p not in before and "result.json" not in p] == []
    assert not (root / "escaped.pdf").exists() and not (tmp_path / "escaped.pdf").exists()


def test_a_symbolic_link_in_a_directory_upload_is_refused(root: Path, db: str) -> None:
    folder = put_directory(root, "20261206-020000", VALID)
    (folder / DOMAIN / "students" / "S1" / "passwd.pdf").symlink_to("/etc/passwd")
    assert_refused(root, db, run(root, db), "20261206-020000",
                   f"{DOMAIN}/students/S1/passwd.pdf: is a symbolic link")


def test_a_zip_bomb_member_is_refused_before_it_is_read(root: Path, db: str) -> None:
    bomb = make_pdf("bomb")[:-6] + b"\0" * (64 << 20) + b"%%EOF\n"
    put_zip(root, "20261207-010000", "prior.zip", {**VALID, **layout({"S1/bomb.pdf": bomb})})
    refused = run(root, db)
    assert_refused(root, db, refused, "20261207-010000",
                   f"{DOMAIN}/students/S1/bomb.pdf expands to {len(bomb):,} bytes",
                   "a zip bomb is refused")
    assert refused.peak_rss_mib < 250


def test_a_pdf_over_the_size_limit_is_refused(root: Path, db: str) -> None:
    big = make_pdf("big")[:-6] + os.urandom(101 << 20) + b"%%EOF\n"
    put_zip(root, "20261207-020000", "prior.zip", layout({"S1/big.pdf": big}), deflate=False)
    assert_refused(root, db, run(root, db), "20261207-020000",
                   f"{DOMAIN}/students/S1/big.pdf: is {len(big):,} bytes (a PDF may be at "
                   f"most {100 << 20:,})")


@pytest.mark.parametrize("form", ["zip", "directory"])
def test_killed_at_every_step_the_rerun_imports_once_and_publishes_once(
        root: Path, db: str, form: str) -> None:
    """SIGKILL at each checkpoint of the run, then a clean rerun: the documents exist exactly
    once, the archive is published whole with its checksum, nothing hidden is left behind."""
    epoch, name = "20261208-010000", "prior.zip"
    if form == "zip":
        uploaded = put_zip(root, epoch, name, VALID).read_bytes()
    else:
        put_directory(root, epoch, VALID)
        name = f"{epoch}.zip"
    clean = run(root, db)
    assert clean.code == 0, clean.stderr
    total = next(e["checkpoints"] for e in clean.events if e["event"] == "epochs.finished")
    expected = check_published(root, name)
    if form == "zip":
        assert expected == uploaded
    killed_after_commit = 0
    for kill_at in range(1, total + 1):
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("TRUNCATE documents.documents, sftpd.epochs")
        for path in (root / tree.DOWNLOADS).iterdir():
            if path.is_file():
                path.unlink()
        os.rename(root / tree.UPLOAD_PROCESSED / epoch, root / tree.UPLOAD / epoch)
        for log in ("processing.log", "processing.json"):
            (root / tree.UPLOAD / epoch / log).unlink()
        killed = run(root, db, env={KILL_AT_ENV: str(kill_at)})
        assert killed.code == -9, (kill_at, killed.stderr)
        if documents(db):
            killed_after_commit += 1
        rerun = run(root, db)
        assert rerun.code == 0, (kill_at, rerun.stderr, rerun.result)
        assert_imported(db, VALID)
        assert check_published(root, name) == expected, kill_at
        assert (root / tree.UPLOAD_PROCESSED / epoch).is_dir()
        assert not (root / tree.UPLOAD / epoch).exists()
    assert killed_after_commit >= 3  # committed, checksum published, archive published, ...


def test_the_format_is_registered_and_pdf_checks_hold() -> None:
    assert "prior-system-pdfs" in registered_formats()
    assert pdf_problem(make_pdf("fine")) is None
    broken = make_pdf("x").replace(b"startxref\n", b"startxref\n9")
    assert pdf_problem(broken) is not None and "startxref" in str(pdf_problem(broken))
