"""The Generic CSV first-load fast path on a real PostgreSQL server: the same tables, counts and
warnings as the staged path, the same errors as an update load, and it steps aside (leaving the
database as it was) whenever something needs the staged path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sftpd.formats import ImportOutcome
from sftpd.formats.generic_csv import GenericCsvFormat, Plan, firstload
from sftpd.formats.generic_csv.database import prepare
from tests.sftpd.epochs.conftest import processing, root, run_epochs
from tests.sftpd.formats.test_generic_csv import DATA, INVALID, everything, put

__all__ = ["root"]  # the epoch tests' tree fixture, used here by name


def plan_for(epoch: Path) -> Plan:
    validation = GenericCsvFormat().validate(epoch)
    assert not validation.errors and isinstance(validation.plan, Plan)
    return validation.plan


def first_load(url: str, epoch: Path) -> ImportOutcome | None:
    """The fast path alone, committed when it loaded (None: it stepped aside)."""
    plan = plan_for(epoch)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        prepare(conn)
        assert firstload.applies(conn, plan.entries)
        return firstload.import_first(conn, plan.entries)


def staged_load(url: str, epoch: Path, monkeypatch: pytest.MonkeyPatch) -> ImportOutcome:
    """The whole import with the fast path turned off, committed."""
    validation = GenericCsvFormat().validate(epoch)
    with monkeypatch.context() as patch:
        patch.setattr(firstload, "applies", lambda conn, entries: False)
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            return GenericCsvFormat().import_(conn, epoch, validation)


def students_and_guardians(epoch: Path) -> None:
    """Only the two files of the fast path, with blanks given as "" (both mean no value)."""
    for name in ("users.csv", "user_roles.csv", "absences.csv"):
        (epoch / name).unlink()
    path = epoch / "guardians.csv"
    path.write_text(path.read_text().replace("S1002,O'Brien,Maeve,Mother,maeve@example.org,,",
                                             'S1002,O\'Brien,Maeve,Mother,maeve@example.org,"",'))


def test_fast_and_staged_paths_store_the_same_rows(tmp_path: Path, database_url: str,
                                                   postgres: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    epoch = Path(shutil.copytree(DATA / "district", tmp_path / "epoch"))
    students_and_guardians(epoch)
    other = postgres.create_database("generic_csv_staged")
    for url in (database_url, other):  # a server set up for day-month-year dates
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {conn.info.dbname} SET DateStyle = 'ISO, DMY'")
    fast = first_load(database_url, epoch)
    assert fast is not None and not fast.errors
    staged = staged_load(other, epoch, monkeypatch)
    assert not staged.errors
    assert fast.files == staged.files
    # The guardian of a student not in the load: skipped, with the same warning and line.
    assert fast.warnings == staged.warnings
    assert [p.describe() for p in fast.warnings] == [
        "guardians.csv line 6: column 'Student Id': the student is not in this load's "
        "students.csv; row skipped"]
    tables = everything(database_url)
    assert tables == everything(other)
    students = [r[0] for r in tables["students"]]
    guardians = [r[0] for r in tables["guardians"]]
    # Normalized as the staged path does it ("" and blank alike are no value).
    assert ("(S1002,O'Brien,,Sean,2011-07-02,male,M,ENROLLED,09,\"Rural Route 2\r\nBox 17\","
            in " ".join(students))
    assert ("(S1001,Alvarez,Jorge,Father,,614-555-0102,\"12 Elm Street, Apt 4\",Applegrove,OH,"
            "43001,ES,es)") in guardians
    assert not any(',"",' in row for row in guardians)


def test_a_later_load_after_a_fast_first_load_is_the_staged_one(
        root: Path, database_url: str, postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """First load (fast) then an update load, against both loads staged: the same tables."""
    put(root, "20261128-020000", "district")
    put(root, "20261129-020000", "second-load")
    code, result = run_epochs(root, database_url, now=None)
    assert code == 0 and [p["outcome"] for p in result["processed"]] == ["Succeeded"] * 2
    other = postgres.create_database("generic_csv_staged_twice")
    for dataset in ("district", "second-load"):
        outcome = staged_load(other, DATA / dataset, monkeypatch)
        assert not outcome.errors
    assert everything(database_url) == everything(other)


@pytest.mark.parametrize(("change", "why"), [
    ((",Female,", ",Femme,"), "not a Gender value"),
    (("03/14/2012", "14/03/2012"), "the date type would read it as 14 March"),
    (("03/14/2012", "3/14/2012"), "the date type reads a one-digit month"),
    (("03/14/2012", "Mar 14 2012"), "the date type reads a month's name"),
    (("12-31-2010", "02-30-2010"), "no 30 February: the date type refuses it"),
    (("S1006,", "S1001,"), "a repeated Student Id: the key build fails"),
    (("S1004,Smith,", "S1004,,"), "a required value missing: NOT NULL"),
    (("S1004,Smith,", "S1004,  ,"), "a blank required value"),
    (("S1004,", "S-1004,"), "not letters and digits"),
    (("S1006,", "S" + "1" * 20 + ","), "21 characters"),
    (("ENROLLED,09", "Enrolled,09"), "not a District Enrollment value"),
    ((",vi\n", ",vie\n"), "not a language code"),
])
def test_doubt_leaves_the_database_as_it_was(tmp_path: Path, database_url: str,
                                             change: tuple[str, str], why: str) -> None:
    epoch = Path(shutil.copytree(DATA / "district", tmp_path / "epoch"))
    students_and_guardians(epoch)
    file = epoch / ("guardians.csv" if change[0] == ",vi\n" else "students.csv")
    text = file.read_bytes()
    assert change[0].encode() in text
    file.write_bytes(text.replace(change[0].encode(), change[1].encode(), 1))
    with psycopg.connect(database_url) as conn:  # the district's tables, empty
        prepare(conn)
    before = everything(database_url)
    assert first_load(database_url, epoch) is None, why
    assert everything(database_url) == before


@pytest.mark.parametrize("case", sorted(INVALID))
def test_a_first_load_is_refused_with_the_errors_of_an_update_load(
        root: Path, database_url: str, case: str) -> None:
    """Every invalid case of test_generic_csv.py, now as the district's first load: the same
    message with file, line and column, and nothing imported."""
    file, old, new, expected = INVALID[case]
    epoch = put(root, "20261128-020000", "district")
    if old:
        text = (epoch / file).read_bytes()
        (epoch / file).write_bytes(text.replace(old.encode(), new.encode(), 1))
    else:
        (epoch / file).rename(epoch / new)
    code, result = run_epochs(root, database_url, now=None)
    assert code == 1 and result["processed"][0]["outcome"] == "Failed"
    log, _ = processing(root, "20261128-020000")
    assert expected in log, log
    assert "Nothing was imported: the database is unchanged." in log
    with psycopg.connect(database_url) as conn:  # (rolled back with the epoch: no tables)
        assert conn.execute("SELECT to_regclass('generic_csv.students')").fetchone() == (None,)
