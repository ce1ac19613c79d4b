"""End to end: `sftpd process-epochs` over a real tree into a real PostgreSQL database."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import psycopg
from district_contract import results
from district_contract.results import EpochsResult, Outcome

from sftpd import tree
from sftpd.epochs import ledger
from tests.sftpd.epochs.conftest import (
    DATA,
    counts,
    processing,
    put_epoch,
    run_epochs,
    scalar,
)

BULK_11 = {"academic_sessions": 3, "orgs": 3, "courses": 3, "classes": 3, "users": 6,
           "enrollments": 7, "demographics": 3, "roles": 0, "user_profiles": 0}


def test_bulk_then_delta_in_name_order_and_unrecognized_left_alone(root: Path,
                                                                   database_url: str) -> None:
    put_epoch(root, "2026-09-01", "v1.1-bulk")
    put_epoch(root, "2026-09-02", "v1.1-delta")
    dump = put_epoch(root, "prior-system-dump", "unrecognized")
    before = {p.name: p.read_bytes() for p in dump.iterdir()}

    code, result = run_epochs(root, database_url)

    assert code == 0
    assert result["outcome"] == "NeedsAttention"
    assert [p["name"] for p in result["processed"]] == ["2026-09-01", "2026-09-02"]
    assert [p["rows"] for p in result["processed"]] == [28, 4]
    assert result["unrecognized"] == ["prior-system-dump"]
    assert counts(database_url) == {**BULK_11, "users": 7, "enrollments": 7}
    # The delta changed u-s2, added u-s4 and e8, deleted e5.
    assert scalar(database_url, "SELECT given_name FROM oneroster.users "
                  "WHERE sourced_id = 'u-s2'") == "Benjamin"
    assert scalar(database_url, "SELECT count(*) FROM oneroster.enrollments "
                  "WHERE sourced_id = 'e5'") == 0
    assert scalar(database_url, "SELECT user_sourced_id FROM oneroster.enrollments "
                  "WHERE sourced_id = 'e8'") == "u-s4"
    # Values arrive typed: lists, booleans, dates, quoted commas, non-ASCII text.
    assert scalar(database_url, "SELECT org_sourced_ids FROM oneroster.users "
                  "WHERE sourced_id = 'u-t2'") == ["org-hs", "org-ms"]
    assert scalar(database_url, "SELECT family_name FROM oneroster.users "
                  "WHERE sourced_id = 'u-s3'") == "Díaz, Jr."
    assert scalar(database_url, "SELECT term_sourced_ids FROM oneroster.classes "
                  "WHERE sourced_id = 'cl-bio-2'") == ["as-2026-s1", "as-2026-s2"]
    assert scalar(database_url, "SELECT \"primary\" FROM oneroster.enrollments "
                  "WHERE sourced_id = 'e1'") is True
    assert str(scalar(database_url, "SELECT begin_date FROM oneroster.enrollments "
                      "WHERE sourced_id = 'e1'")) == "2026-08-15"
    # The unrecognized dump stays in upload/, byte for byte.
    assert {p.name: p.read_bytes() for p in dump.iterdir()} == before
    assert sorted(p.name for p in (root / tree.UPLOAD).iterdir()) == ["prior-system-dump"]
    log, report = processing(root, "2026-09-02")
    assert "Outcome:      Succeeded" in log
    assert "users.csv" in log and "added 1, changed 1, deleted 0" in log
    assert "enrollments.csv" in log and "added 1, changed 0, deleted 1" in log
    assert report["outcome"] == "Succeeded" and report["format"] == "oneroster"
    assert {f["file"]: (f["added"], f["changed"], f["deleted"]) for f in report["files"]} == {
        "users.csv": (1, 1, 0), "enrollments.csv": (1, 0, 1)}
    ledger = scalar(database_url, "SELECT array_agg(name || ':' || outcome ORDER BY name) "
                    "FROM sftpd.epochs")
    assert ledger == ["2026-09-01:Succeeded", "2026-09-02:Succeeded"]


def test_version_12_bulk_zipped_then_delta(root: Path, database_url: str) -> None:
    epoch = root / tree.UPLOAD / "2026-10-01"
    epoch.mkdir()
    with zipfile.ZipFile(epoch / "oneroster.zip", "w") as archive:
        for path in sorted((DATA / "v1.2-bulk").iterdir()):
            archive.write(path, f"export/{path.name}")
    put_epoch(root, "2026-10-02", "v1.2-delta")

    code, result = run_epochs(root, database_url)

    assert code == 0 and result["outcome"] == "Succeeded", result
    assert counts(database_url) == {**BULK_11, "users": 6, "roles": 7, "user_profiles": 2,
                                    "enrollments": 7}
    assert scalar(database_url, "SELECT array_agg(sourced_id ORDER BY sourced_id) "
                  "FROM oneroster.roles WHERE user_sourced_id = 'u-s3'") is None
    assert scalar(database_url, "SELECT pronouns FROM oneroster.users "
                  "WHERE sourced_id = 'u-s4'") == "they/them"
    assert scalar(database_url, "SELECT sex FROM oneroster.demographics "
                  "WHERE sourced_id = 'u-s2'") == "unspecified"
    log, report = processing(root, "2026-10-01")
    assert "OneRoster 1.2 CSV (bulk; zipped in oneroster.zip)" in log
    assert (root / tree.UPLOAD_PROCESSED / "2026-10-01" / "oneroster.zip").is_file()
    assert report["rows"] == 37


def _assert_failed_and_untouched(root: Path, database_url: str, name: str,
                                 expected: list[tuple[str, int, str]]) -> str:
    put_epoch(root, "2026-09-01", "v1.1-bulk")
    assert run_epochs(root, database_url)[0] == 0
    before = counts(database_url)
    snapshot = scalar(database_url, "SELECT md5(string_agg(u::text, '|' ORDER BY sourced_id)) "
                      "FROM oneroster.users u")
    put_epoch(root, name, name)

    code, result = run_epochs(root, database_url)

    assert code == 1 and result["outcome"] == "Failed"
    assert result["processed"][0]["outcome"] == "Failed"
    assert result["processed"][0]["errors"] == len(expected)
    assert counts(database_url) == before
    assert scalar(database_url, "SELECT md5(string_agg(u::text, '|' ORDER BY sourced_id)) "
                  "FROM oneroster.users u") == snapshot
    log, report = processing(root, name)
    assert "Outcome:      Failed" in log and "database is unchanged" in log
    found = [(p["file"], p["line"], p["message"]) for p in report["problems"]]
    assert len(found) == len(expected), found
    for (file, line, fragment), (f_file, f_line, f_message) in zip(expected, found,
                                                                    strict=True):
        assert (f_file, f_line) == (file, line) and fragment in f_message, found
        assert f"{file} line {line}: {f_message}" in log
    assert scalar(database_url, "SELECT outcome FROM sftpd.epochs WHERE name = %s",
                  name) == "Failed"
    return log


def test_header_errors_fail_the_epoch(root: Path, database_url: str) -> None:
    _assert_failed_and_untouched(root, database_url, "header-errors", [
        ("classes.csv", 1, "columns are out of order"),
        ("users.csv", 1, "column 'SourcedId' must be spelled 'sourcedId'"),
        ("enrollments.csv", 1, "required column 'primary' is missing"),
    ])


def test_bad_values_fail_the_epoch(root: Path, database_url: str) -> None:
    _assert_failed_and_untouched(root, database_url, "bad-values", [
        ("academicSessions.csv", 3, "startDate '2026-02-30' is not a valid date"),
        ("academicSessions.csv", 4, "type 'quarter' is not one of"),
        ("academicSessions.csv", 4, "schoolYear '27' is not a year"),
        ("orgs.csv", 4, "status must be blank in a bulk file, found 'deleted'"),
        ("users.csv", 4, "enabledUser 'yes' must be true or false"),
        ("userProfiles.csv", 3, "profileId is required"),
        ("roles.csv", 6, "dateLastModified '2026-13-01T00:00:00Z' is not a valid date"),
        ("enrollments.csv", 5, "role 'pupil' is not one of"),
    ])


def test_broken_references_fail_the_epoch(root: Path, database_url: str) -> None:
    _assert_failed_and_untouched(root, database_url, "broken-references", [
        ("classes.csv", 3, "courseSourcedId 'c-none' does not match"),
        ("users.csv", 3, "orgSourcedIds 'org-nowhere' does not match"),
        ("enrollments.csv", 3, "userSourcedId 'u-ghost' does not match"),
    ])


def test_delta_deleting_a_referenced_user_fails(root: Path, database_url: str) -> None:
    log = _assert_failed_and_untouched(root, database_url, "delta-dangling", [
        ("users.csv", 2, "enrollments 'e7' (already in the database) refers to "
         "userSourcedId 'u-s3'"),
    ])
    assert "users.csv line 2: enrollments 'e7'" in log


def test_malformed_csv_row_is_reported_with_its_line(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    with (epoch / "orgs.csv").open("a") as orgs:
        orgs.write("org-x,,,Extra,school,EX,org-d,surplus\n")

    code, _ = run_epochs(root, database_url)

    assert code == 1
    _, report = processing(root, "2026-09-01")
    assert report["problems"][0]["file"] == "orgs.csv"
    assert report["problems"][0]["line"] == 5
    assert "extra data after last expected column" in report["problems"][0]["message"]
    assert counts(database_url) == {}


def test_name_clash_gets_a_suffix_and_identical_reupload_is_not_imported_twice(
        root: Path, database_url: str) -> None:
    put_epoch(root, "2026-09-01", "v1.1-bulk")
    assert run_epochs(root, database_url)[0] == 0
    put_epoch(root, "2026-09-02", "v1.1-delta")
    assert run_epochs(root, database_url)[0] == 0
    assert counts(database_url)["users"] == 7
    # The district uploads the bulk set again under the same name: same identity, so it is
    # not imported again (that would undo the delta); it still moves, beside the first.
    put_epoch(root, "2026-09-01", "v1.1-bulk")

    code, result = run_epochs(root, database_url)

    assert code == 0 and result["processed"][0]["name"] == "2026-09-01"
    assert counts(database_url)["users"] == 7
    processed = root / tree.UPLOAD_PROCESSED
    assert sorted(p.name for p in processed.iterdir()) == [
        "2026-09-01", "2026-09-01.1", "2026-09-02"]
    note = (processed / "2026-09-01.1" / "processing.log").read_text()
    assert "not imported again" in note
    assert "not imported again" not in (processed / "2026-09-01" / "processing.log").read_text()
    assert scalar(database_url, "SELECT count(*) FROM sftpd.epochs") == 2


def test_staff_force_a_format_and_mark_processed(root: Path, database_url: str) -> None:
    put_epoch(root, "prior-system-dump", "unrecognized")
    put_epoch(root, "one-off", "unrecognized")
    code, result = run_epochs(root, database_url)
    assert code == 0 and result["outcome"] == "NeedsAttention"
    assert result["unrecognized"] == ["one-off", "prior-system-dump"]

    code, result = run_epochs(root, database_url, "--epoch", "one-off", "--format", "oneroster")
    assert code == 1 and result["processed"][0]["outcome"] == "Failed"
    log, _ = processing(root, "one-off")
    assert "no manifest.csv found" in log and "format oneroster chosen by staff" in log

    code, result = run_epochs(root, database_url, "--mark-processed", "prior-system-dump")
    assert code == 0 and result["outcome"] == "Succeeded"
    log, report = processing(root, "prior-system-dump")
    assert "marked processed by staff without import" in log
    assert report["format"] is None and report["rows"] == 0
    assert (root / tree.UPLOAD_PROCESSED / "prior-system-dump" / "README.txt").is_file()
    assert list((root / tree.UPLOAD).iterdir()) == []
    assert counts(database_url) == {}

    code, result = run_epochs(root, database_url, "--epoch", "no-such-epoch")
    assert code == 1 and "no epoch named 'no-such-epoch'" in result["message"]


def test_nothing_to_do_and_bad_usage(root: Path, database_url: str) -> None:
    code, result = run_epochs(root, database_url)
    assert code == 0 and results.parse(json.dumps(result)) == EpochsResult(
        outcome=Outcome.NOTHING_TO_DO, message="NothingToDo: 0 processed")
    code, result = run_epochs(root, database_url, "--format", "oneroster")
    assert code == 2 and result["outcome"] == "Failed"
    assert result["reason"] == "InvalidArguments" and "--format needs --epoch" in result["message"]
    code, result = run_epochs(root, "postgresql://nobody@127.0.0.1:1/none")
    assert code == 1 and "the run stopped" in result["message"]


def test_impossible_date_alone_is_found_by_the_typed_merge(root: Path,
                                                           database_url: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    enrollments = epoch / "enrollments.csv"
    # Well shaped (passes the cheap checks), but there is no 31 June: only the cast finds it.
    enrollments.write_text(enrollments.read_text().replace(
        "e2,,,cl-alg-1,org-hs,u-s1,student,false,2026-08-15,",
        "e2,,,cl-alg-1,org-hs,u-s1,student,false,2026-06-31,"))

    code, _ = run_epochs(root, database_url)

    assert code == 1
    _, report = processing(root, "2026-09-01")
    assert [(p["file"], p["line"], p["message"]) for p in report["problems"]] == [
        ("enrollments.csv", 3,
         "beginDate '2026-06-31' is not a valid date (expected YYYY-MM-DD)")]
    assert counts(database_url) == {}


def test_repeated_sourced_ids_are_named_in_bulk_and_delta(root: Path,
                                                          database_url: str) -> None:
    bulk = put_epoch(root, "2026-09-01", "v1.1-bulk")
    with (bulk / "orgs.csv").open("a") as orgs:
        orgs.write("org-hs,,,Lincoln High again,school,LHS2,org-d\n")
    delta = put_epoch(root, "2026-09-02", "v1.1-delta")
    with (delta / "enrollments.csv").open("a") as enrollments:
        enrollments.write("e8,active,2026-09-01T09:00:00Z,cl-bio-2,org-hs,u-s4,student,,,\n")

    code, _ = run_epochs(root, database_url)

    assert code == 1
    _, bulk_report = processing(root, "2026-09-01")
    _, delta_report = processing(root, "2026-09-02")
    assert [(p["file"], p["line"], p["message"]) for p in bulk_report["problems"]] == [
        ("orgs.csv", 5, "sourcedId 'org-hs' appears more than once (first on line 3)")]
    assert [(p["file"], p["line"], p["message"]) for p in delta_report["problems"]] == [
        ("enrollments.csv", 4, "sourcedId 'e8' appears more than once (first on line 2)")]
    assert counts(database_url) == {}


def test_symlink_out_of_the_tree_is_never_read(root: Path, database_url: str,
                                               tmp_path: Path) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    secret = tmp_path / "elsewhere.csv"
    secret.write_text((epoch / "users.csv").read_text())
    (epoch / "users.csv").unlink()
    (epoch / "users.csv").symlink_to(secret)

    code, _ = run_epochs(root, database_url)

    assert code == 1
    _, report = processing(root, "2026-09-01")
    assert [p["message"] for p in report["problems"]] == [
        "file.users is 'bulk' but users.csv is missing"]
    assert counts(database_url) == {}


def test_staff_epoch_still_waits_for_a_partial_file(root: Path, database_url: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    (epoch / "users.csv").rename(epoch / "users.csv.filepart")
    code, result = run_epochs(root, database_url, "--epoch", "2026-09-01", now=None)
    assert code == 0 and result["pending"] == ["2026-09-01"] and result["processed"] == []
    (epoch / "users.csv.filepart").rename(epoch / "users.csv")
    # Staff do not wait for the quiet time.
    code, result = run_epochs(root, database_url, "--epoch", "2026-09-01", now=None)
    assert code == 0 and [p["rows"] for p in result["processed"]] == [28]


def test_thousands_of_errors_are_all_counted_and_the_first_listed(root: Path,
                                                                 database_url: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    with (epoch / "enrollments.csv").open("a") as enrollments:
        for n in range(1500):
            enrollments.write(f"x{n},,,cl-alg-1,org-hs,u-s1,pupil,,,\n")

    code, result = run_epochs(root, database_url)

    assert code == 1 and result["processed"][0]["errors"] == 1500
    log, report = processing(root, "2026-09-01")
    assert report["errors"] == 1500 and len(report["problems"]) == 1000
    assert report["problems"][0]["line"] == 9 and report["problems"][-1]["line"] == 1008
    assert "... and 500 more of the same kinds" in log


def test_a_second_run_waits_for_the_first_and_touches_nothing(root: Path,
                                                              database_url: str) -> None:
    epoch = put_epoch(root, "2026-09-01", "v1.1-bulk")
    with psycopg.connect(database_url, autocommit=True) as other_run:
        assert ledger.try_lock(other_run)
        code, result = run_epochs(root, database_url, "--lock-wait-seconds", "1")
        assert code == 1 and "another process-epochs run holds the lock" in result["message"]
        assert epoch.is_dir() and counts(database_url) == {}
    code, result = run_epochs(root, database_url)
    assert code == 0 and [p["name"] for p in result["processed"]] == ["2026-09-01"]
