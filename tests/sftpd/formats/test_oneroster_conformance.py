"""OneRoster against the 1EdTech OneRoster 1.2.1 CSV binding's own text, through real
`sftpd process-epochs` runs into a real PostgreSQL database: userProfiles columns, both 1.2
users layouts, enrollment roles, `ext:` terms, demographics as users, empty and blank-ended
files, and what a re-dropped epoch's log says."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import psycopg
import pytest

from sftpd import tree
from sftpd.formats.copying import MAX_HELD, copy_chunks
from sftpd.formats.oneroster import OneRosterFormat, bulkload
from sftpd.formats.oneroster.database import Entry, import_staged, prepare
from sftpd.formats.oneroster.source import Source
from sftpd.formats.oneroster.spec import tables_for
from tests.sftpd.epochs.conftest import DATA, counts, processing, put_epoch, run_epochs, scalar

# The binding's userProfiles.csv table, in its order.
USER_PROFILES_121 = ("sourcedId,status,dateLastModified,userSourcedId,profileType,vendorId,"
                     "applicationId,description,credentialType,username,password")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "district"
    tree.ensure_tree(path)
    return path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def problems(root: Path, name: str) -> list[tuple[str | None, int | None, str]]:
    _, report = processing(root, name)
    return [(p["file"], p["line"], p["message"]) for p in report["problems"]]


def test_user_profiles_header_is_the_bindings(tmp_path: Path) -> None:
    epoch = Path(shutil.copytree(DATA / "v1.2-bulk", tmp_path / "epoch"))
    assert (epoch / "userProfiles.csv").read_text().splitlines()[0] == USER_PROFILES_121
    assert OneRosterFormat().validate(epoch).errors == []
    # A column the binding does not have is refused, named.
    edit(epoch / "userProfiles.csv", "userSourcedId,profileType", "userSourcedId,profileId,"
         "profileType")
    assert [p.describe() for p in OneRosterFormat().validate(epoch).errors] == [
        "userProfiles.csv line 1: unknown column 'profileId' (extensions must be named "
        "'metadata.<name>' and come after the specification's columns)"]


def test_users_12_with_and_without_resource_sourced_ids(root: Path, database_url: str) -> None:
    # 1.2 (with resourceSourcedIds) and 1.2.1 (without) share oneroster.version 1.2.
    assert "resourceSourcedIds" in (DATA / "v1.2-bulk" / "users.csv").read_text()
    assert "resourceSourcedIds" not in (DATA / "v1.2.1-bulk" / "users.csv").read_text()
    put_epoch(root, "2026-10-01", "v1.2-bulk")
    put_epoch(root, "2026-10-02", "v1.2.1-bulk")
    edit(root / tree.UPLOAD / "2026-10-02" / "users.csv", "Bob", "Bobby")

    code, result = run_epochs(root, database_url)

    assert code == 0, result
    assert [p["outcome"] for p in result["processed"]] == ["Succeeded", "Succeeded"]
    assert counts(database_url)["users"] == 6
    assert scalar(database_url, "SELECT preferred_given_name FROM oneroster.users "
                  "WHERE sourced_id = 'u-t2'") == "Bobby"
    # A header that is neither layout is told against the current (1.2.1) one.
    epoch = Path(shutil.copytree(DATA / "v1.2.1-bulk", root.parent / "mixed"))
    edit(epoch / "users.csv", "userMasterIdentifier,", "")
    assert [p.describe() for p in OneRosterFormat().validate(epoch).errors] == [
        "users.csv line 1: required column 'userMasterIdentifier' is missing"]


def test_enrollment_roles_are_the_bindings_four(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    # roles.csv's vocabulary (aide, guardian, ...) is not enrollments.csv's.
    edit(epoch / "enrollments.csv", "e4,,,cl-bio-2,org-hs,u-s2,student",
         "e4,,,cl-bio-2,org-hs,u-s2,aide")
    edit(epoch / "enrollments.csv", "e5,,,cl-bio-2,org-hs,u-s1,student",
         "e5,,,cl-bio-2,org-hs,u-s1,guardian")
    edit(epoch / "enrollments.csv", "e6,,,cl-eng7-h,org-ms,u-t2,teacher",
         "e6,,,cl-eng7-h,org-ms,u-t2,administrator")
    edit(epoch / "enrollments.csv", "e7,,,cl-eng7-h,org-ms,u-s3,student",
         "e7,,,cl-eng7-h,org-ms,u-s3,proctor")

    code, _ = run_epochs(root, database_url)

    assert code == 1
    listed = ("administrator, proctor, student, teacher (or a proprietary term starting with "
              "'ext:')")
    assert problems(root, "2026-10-01") == [
        ("enrollments.csv", 5, f"role 'aide' is not one of: {listed}"),
        ("enrollments.csv", 6, f"role 'guardian' is not one of: {listed}"),
    ]
    assert counts(database_url) == {}  # the whole epoch rolled back


def test_extension_terms_where_the_binding_allows_them(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    edit(epoch / "academicSessions.csv", ",semester,", ",ext:trimester,")
    edit(epoch / "orgs.csv", ",school,", ",ext:campus,")
    edit(epoch / "classes.csv", ",scheduled,", ",ext:online,")
    edit(epoch / "roles.csv", ",teacher,", ",ext:nurse,")
    edit(epoch / "enrollments.csv", ",u-s2,student,", ",u-s2,ext:observer,")
    edit(epoch / "demographics.csv", ",unspecified,", ",ext:nonbinary,")

    code, result = run_epochs(root, database_url)

    assert code == 0, (result, problems(root, "2026-10-01"))
    assert scalar(database_url, "SELECT role FROM oneroster.enrollments "
                  "WHERE sourced_id = 'e4'") == "ext:observer"
    assert scalar(database_url, "SELECT sex FROM oneroster.demographics "
                  "WHERE sourced_id = 'u-s2'") == "ext:nonbinary"


def test_extension_terms_need_the_prefix_and_a_name(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    edit(epoch / "orgs.csv", ",school,", ",ext:,")            # nothing after the prefix
    edit(epoch / "classes.csv", ",scheduled,", ",EXT:online,")  # case-sensitive
    edit(epoch / "roles.csv", ",primary,", ",ext:primary,")    # roleType is not extensible
    v11 = put_epoch(root, "2026-10-02", "v1.1-bulk")           # 1.1 stays closed
    edit(v11 / "orgs.csv", ",school,", ",ext:campus,")

    code, _ = run_epochs(root, database_url)

    assert code == 1
    assert [(f, line, m.split(" is not one of")[0]) for f, line, m in
            problems(root, "2026-10-01")] == [
        ("orgs.csv", 3, "type 'ext:'"),
        ("classes.csv", 2, "classType 'EXT:online'"),
        ("roles.csv", 2, "roleType 'ext:primary'"),
    ]
    assert [(f, line, m) for f, line, m in problems(root, "2026-10-02")] == [
        ("orgs.csv", 3, "type 'ext:campus' is not one of: department, school, district, "
         "local, state, national")]
    assert counts(database_url) == {}


def test_demographics_must_describe_an_existing_user(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    with (epoch / "demographics.csv").open("a") as demographics:
        demographics.write("u-nobody,,,2011-01-01,male,,,,,,,,,,,\n")

    code, _ = run_epochs(root, database_url)

    assert code == 1
    assert problems(root, "2026-10-01") == [
        ("demographics.csv", 5, "sourcedId 'u-nobody' does not match the sourcedId of any "
         "users row")]
    assert counts(database_url) == {}


def test_demographics_of_a_user_a_delta_deletes_are_named(root: Path,
                                                          database_url: str) -> None:
    put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    assert run_epochs(root, database_url)[0] == 0
    delta = put_epoch(root, "2026-10-02", "v1.2-delta")
    # u-s2 has a demographics row but no enrollment or role once e4 goes too.
    header = (delta / "users.csv").read_text().splitlines()[0]
    blanks = "," * (header.count(",") - 2)
    (delta / "users.csv").write_text(f"{header}\nu-s2,tobedeleted,2026-09-02T08:00:00Z{blanks}\n")
    (delta / "enrollments.csv").write_text(
        (delta / "enrollments.csv").read_text() + "e4,tobedeleted,2026-09-02T08:00:00Z,,,,,,,\n")
    (delta / "roles.csv").write_text(
        (delta / "roles.csv").read_text() + "r-s2,tobedeleted,2026-09-02T08:00:00Z,,,,,,,\n")

    code, _ = run_epochs(root, database_url)

    assert code == 1
    assert ("users.csv", 2, "demographics 'u-s2' (already in the database) refers to "
            "sourcedId 'u-s2', which is no longer in users") in problems(root, "2026-10-02")
    assert counts(database_url)["users"] == 6


def test_empty_bulk_file_is_an_error_and_empties_nothing(root: Path, database_url: str) -> None:
    put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    assert run_epochs(root, database_url)[0] == 0
    # Nothing refers to demographics: without the rule this would silently delete all three.
    epoch = root / tree.UPLOAD / "2026-10-02"
    epoch.mkdir()
    (epoch / "manifest.csv").write_text("propertyName,value\nmanifest.version,1.0\n"
                                        "oneroster.version,1.2\nfile.demographics,bulk\n")
    header = (DATA / "v1.2.1-bulk" / "demographics.csv").read_text().splitlines()[0]
    (epoch / "demographics.csv").write_text(header + "\r\n\r\n")

    code, _ = run_epochs(root, database_url)

    assert code == 1
    assert problems(root, "2026-10-02") == [
        ("demographics.csv", 2, "file.demographics is 'bulk' but demographics.csv has no data "
         "rows (the binding does not permit empty files); an empty bulk file would delete "
         "every row, so nothing is imported")]
    assert counts(database_url)["demographics"] == 3


def test_the_import_itself_never_empties_a_table_from_an_empty_bulk_file(
        root: Path, database_url: str) -> None:
    """Whatever validation let through: both import paths refuse to replace from zero rows."""
    put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    assert run_epochs(root, database_url)[0] == 0
    epoch = root.parent / "empty"
    epoch.mkdir()
    table = tables_for("1.2")["demographics"]
    header = tuple(c.name for c in table.columns)
    (epoch / table.file).write_text(",".join(header) + "\n")
    source, entries = Source(epoch, folder=epoch), [Entry(table, "bulk", header)]
    with psycopg.connect(database_url) as conn:
        prepare(conn)
        assert bulkload.import_bulk(conn, source, entries) is None  # steps aside
        assert counts_in(conn, "demographics") == 3
        outcome = import_staged(conn, source, entries)
        assert [(p.file, p.line) for p in outcome.errors] == [("demographics.csv", 2)]
        assert "would delete every row" in outcome.errors[0].message
        assert counts_in(conn, "demographics") == 3
        conn.rollback()


def counts_in(conn: psycopg.Connection[tuple[int]], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM oneroster.{table}").fetchone()
    assert row is not None
    return int(row[0])


def test_empty_delta_file_changes_nothing_and_is_warned(root: Path, database_url: str) -> None:
    put_epoch(root, "2026-10-01", "v1.2.1-bulk")
    delta = put_epoch(root, "2026-10-02", "v1.2-delta")
    edit(delta / "manifest.csv", "file.orgs,absent", "file.orgs,delta")
    header = (DATA / "v1.2.1-bulk" / "orgs.csv").read_text().splitlines()[0]
    (delta / "orgs.csv").write_text(header + "\n")

    code, _ = run_epochs(root, database_url)

    assert code == 0, problems(root, "2026-10-02")
    _, report = processing(root, "2026-10-02")
    assert report["warnings"] == [{
        "file": "orgs.csv", "line": 2, "message": "file.orgs is 'delta' but orgs.csv has no "
        "data rows (the binding does not permit empty files); it changes nothing"}]
    assert counts(database_url)["orgs"] == 3


@pytest.mark.parametrize("ending", [b"\n", b"\r\n\r\n", b"\n\n\n"])
def test_trailing_blank_lines_are_tolerated(root: Path, database_url: str,
                                            ending: bytes) -> None:
    bulk = put_epoch(root, "2026-10-01", "v1.1-bulk")   # the all-bulk fast path
    delta = put_epoch(root, "2026-10-02", "v1.1-delta")  # the staged path
    for path in (bulk / "orgs.csv", bulk / "users.csv", delta / "users.csv"):
        path.write_bytes(path.read_bytes() + ending)

    code, result = run_epochs(root, database_url)

    assert code == 0, (result, problems(root, "2026-10-01"), problems(root, "2026-10-02"))
    assert counts(database_url)["orgs"] == 3
    assert counts(database_url)["users"] == 7


@pytest.mark.parametrize("data", [
    b"a,b\n1,2\n", b"a,b\n1,2\n\n\n", b"a,b\r\n1,2\r\n\r\n", b"a,b\n1,2", b"\n\n",
    b'a,b\n1,"x\n\ny"\n\n', b"a,b\n\n1,2\n\n"])
@pytest.mark.parametrize("size", [1, 2, 3, 64])
def test_copy_chunks_drop_only_the_trailing_blank_lines(data: bytes, size: int) -> None:
    body = data.rstrip(b"\r\n")
    ending = data[len(body):]
    expected = body + (ending[:2] if ending.startswith(b"\r\n") else ending[:1])
    assert b"".join(copy_chunks(io.BytesIO(data), size)) == expected


def test_copy_chunks_pass_a_flood_of_blank_lines_on() -> None:
    data = b"a,b\n1,2" + b"\n" * (MAX_HELD * 3)
    out = list(copy_chunks(io.BytesIO(data), 1024))
    assert max(len(c) for c in out) <= MAX_HELD + 1024 and len(b"".join(out)) > MAX_HELD


def test_redropped_epoch_log_says_nothing_was_imported_again(root: Path,
                                                             database_url: str) -> None:
    put_epoch(root, "2026-10-01", "v1.1-bulk")
    assert run_epochs(root, database_url)[0] == 0
    first, _ = processing(root, "2026-10-01")
    put_epoch(root, "2026-10-01", "v1.1-bulk")

    assert run_epochs(root, database_url)[0] == 0

    again = (root / tree.UPLOAD_PROCESSED / "2026-10-01.1" / "processing.log").read_text()
    assert "The data was imported into the district's database." in first
    assert "The data was imported" not in again
    assert "Nothing was imported again: this same content was already processed at " in again
    assert "this upload did not touch the database" in again
    _, report = processing(root, "2026-10-01.1")
    assert report["repeat"] is True
    assert "repeat" not in processing(root, "2026-10-01")[1]
    assert scalar(database_url, "SELECT count(*) FROM sftpd.epochs") == 1
