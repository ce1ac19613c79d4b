"""The Generic CSV API format on a real PostgreSQL: the guide's load rules, and every invalid
case refused with file, line and column, the database unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sftpd import tree
from sftpd.formats.generic_csv import GenericCsvFormat
from tests.sftpd.epochs.conftest import processing, root, run_epochs

__all__ = ["root"]  # the epoch tests' tree fixture, used here by name

DATA = Path(__file__).resolve().parents[2] / "data" / "generic-csv"


def put(root: Path, name: str, dataset: str) -> Path:
    """Upload a hand-made set the documented way: files in an epoch, then an empty COMPLETE."""
    epoch = root / tree.UPLOAD / name
    shutil.copytree(DATA / dataset, epoch)
    (epoch / "COMPLETE").write_bytes(b"")
    return epoch


def rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def everything(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Generic CSV table, sorted."""
    tables = ("students", "guardians", "users", "user_role_assignments", "role_permissions",
              "absences")
    return {t: sorted(rows(database_url, f"SELECT t::text FROM generic_csv.{t} t"))
            for t in tables}


def test_recognized_and_headers_exact(tmp_path: Path) -> None:
    fmt = GenericCsvFormat()
    epoch = Path(shutil.copytree(DATA / "district", tmp_path / "e"))
    found = fmt.recognize(epoch)
    assert found is not None and found.format == "generic-csv"
    validation = fmt.validate(epoch)
    assert validation.errors == [] and validation.warnings == []
    # Another system's export (and a OneRoster set) is not claimed.
    other = tmp_path / "other"
    other.mkdir()
    (other / "students_2019_export.csv").write_text("StudentID,LastName\n1,A\n")
    assert fmt.recognize(other) is None
    (epoch / "manifest.csv").write_text("propertyName,value\noneroster.version,1.1\n")
    assert fmt.recognize(epoch) is None


def test_realistic_district(root: Path, database_url: str) -> None:
    put(root, "20261128-020000", "district")
    code, result = run_epochs(root, database_url, now=None)  # COMPLETE: no quiet time
    assert code == 0, result
    [done] = result["processed"]
    assert done["outcome"] == "Succeeded" and done["format"] == "generic-csv"
    log, report = processing(root, "20261128-020000")
    # RFC 4180: BOM, CRLF, quoted commas, doubled quotes, a newline inside a field; the four
    # date forms; the Gender spellings.
    assert rows(database_url, "SELECT student_id, last_name, date_of_birth::text, gender, "
                "district_enrollment, address, building_reporting_id FROM generic_csv.students "
                "ORDER BY 1") == [
        ("S1001", "Alvarez", "2012-03-14", "F", "ENROLLED", "12 Elm Street, Apt 4", "012345"),
        ("S1002", "O'Brien", "2011-07-02", "M", "ENROLLED", "Rural Route 2\r\nBox 17", "012346"),
        ("S1003", 'Nguyen "Tony"', "2013-01-30", "M", "PRE_ENROLLED", "5 Oak Ave", "012345"),
        ("S1004", "Smith", "2010-12-31", "F", "WITHDREW", None, "012347"),
        ("S1006", "Haddad", "2014-11-09", "M", "HISTORICAL_IDLE", None, "012348"),
        ("s1005", "Kowalski", "2012-02-29", "F", "GRADUATED", None, "012348"),
    ]
    assert rows(database_url, "SELECT student_id, first_name, language FROM "
                "generic_csv.guardians ORDER BY 1, 2") == [
        ("S1001", "Jorge", "es"), ("S1001", "Rosa", "es"), ("S1002", "Maeve", "en"),
        ("S1003", "Linh", "vi")]
    # The guardian of a student not in the load: skipped, with a warning naming the row.
    assert ("guardians.csv line 6: column 'Student Id': the student is not in this load's "
            "students.csv; row skipped") in log
    assert rows(database_url, "SELECT email, position, role, buildings FROM "
                "generic_csv.user_role_assignments ORDER BY 1, 2") == [
        ("jdoe@applegrove.org", 1, "Special Education Teacher", ["North Elementary"]),
        ("jdoe@applegrove.org", 2, "Related Service Provider",
         ["North Elementary", "South Elementary", "East Elementary", "West Elementary"]),
        ("jdoe@applegrove.org", 3, "Literacy Teacher", ["South Elementary"]),
        ("psmith@applegrove.org", 1, "Principal", ["East Elementary"]),
        ("rleft@applegrove.org", 1, "Literacy Teacher", ["South Elementary"]),
    ]
    assert [r[0] for r in rows(database_url, "SELECT email FROM generic_csv.users "
                                             "ORDER BY 1")] == [
        "admin@applegrove.org", "jdoe@applegrove.org", "psmith@applegrove.org",
        "rleft@applegrove.org"]
    assert rows(database_url, "SELECT count(*), count(*) FILTER (WHERE max_permission = "
                "'owner') FROM generic_csv.role_permissions") == [(5, 2)]
    assert rows(database_url, "SELECT student_id, absence_date::text FROM generic_csv.absences "
                "ORDER BY 1, 2") == [("S1001", "2026-09-03"), ("S1001", "2026-09-04"),
                                     ("S1002", "2026-09-05"), ("S1006", "2026-09-08")]
    assert report["rows"] == 6 + 5 + 4 + 5 + 4
    assert [(f["file"], f["added"]) for f in report["files"]] == [
        ("students.csv", 6), ("guardians.csv", 4), ("users.csv", 4), ("user_roles.csv", 5),
        ("absences.csv", 4)]


def test_second_load_updates_adds_replaces_guardians_and_deletes_only_on_request(
        root: Path, database_url: str) -> None:
    put(root, "20261128-020000", "district")
    put(root, "20261129-020000", "second-load")
    code, result = run_epochs(root, database_url, now=None)
    assert code == 0 and [p["outcome"] for p in result["processed"]] == ["Succeeded"] * 2
    log, report = processing(root, "20261129-020000")
    # Students added or updated; the ones left out are still there. `Building IRN` (the
    # older header) fills Building Reporting Id; the trailing blank line is tolerated.
    assert rows(database_url, "SELECT student_id, district_enrollment, building, "
                "building_reporting_id FROM generic_csv.students ORDER BY 1") == [
        ("S1001", "TRANSFERRED", "South Elementary", "012346"),
        ("S1002", "ENROLLED", "South Elementary", "012346"),
        ("S1003", "PRE_ENROLLED", "North Elementary", "012345"),
        ("S1004", "WITHDREW", "East Elementary", "012347"),
        ("S1006", "HISTORICAL_IDLE", "West Elementary", "012348"),
        ("S1007", "ENROLLED", "North Elementary", "012345"),
        ("s1005", "GRADUATED", "West Elementary", "012348"),
    ]
    [students] = [f for f in report["files"] if f["file"] == "students.csv"]
    assert (students["added"], students["changed"]) == (1, 1)  # S1002 is unchanged
    # Guardians replaced per student of the load: S1001 keeps only Rosa (new email), S1002's
    # are gone (in the load, none given), S1003 (not in the load) keeps Linh, S1007 gets Ada.
    assert rows(database_url, "SELECT student_id, first_name, email FROM generic_csv.guardians "
                "ORDER BY 1, 2") == [("S1001", "Rosa", "rosa.new@example.org"),
                                     ("S1003", "Linh", None), ("S1007", "Ada", None)]
    assert "guardians.csv line 4: column 'Student Id'" in log
    # Users: updated (email in any case), deleted through Deleted only, added; roles replaced.
    assert rows(database_url, "SELECT email, last_name FROM generic_csv.users ORDER BY 1") == [
        ("admin@applegrove.org", "Admin"), ("jdoe@applegrove.org", "Doe-Ray"),
        ("new@applegrove.org", "New"), ("psmith@applegrove.org", "Smith")]
    assert rows(database_url, "SELECT email, position, role, buildings FROM "
                "generic_csv.user_role_assignments ORDER BY 1, 2") == [
        ("jdoe@applegrove.org", 1, "Literacy Teacher", ["West Elementary"]),
        ("new@applegrove.org", 1, "Special Education Teacher",
         ["North Elementary", "South Elementary"]),
        ("new@applegrove.org", 2, "Principal", ["North Elementary"]),
        ("psmith@applegrove.org", 1, "Principal", ["East Elementary"]),
    ]
    assert rows(database_url, "SELECT role, form, default_permission, max_permission FROM "
                "generic_csv.role_permissions WHERE role IN ('Literacy Teacher', 'Principal') "
                "ORDER BY 1, 2") == [("Literacy Teacher", "IEP", "view", "edit"),
                                     ("Principal", "504 Plan", "view", "view"),
                                     ("Principal", "IEP", "view", "owner")]
    assert rows(database_url, "SELECT count(*) FROM generic_csv.absences") == [(6,)]


# (file, text in it, replacement, what processing.log must say). students.csv's lines: 1
# header, 2 S1001, 3-4 S1002 (a quoted newline), 5 S1003, 6 S1004, 7 s1005, 8 S1006.
INVALID = {
    "gender": ("students.csv", ",Female,", ",Femme,",
               "students.csv line 6: column 'Gender': 'Femme' is not one of: M, F, m, f, male"),
    "enrollment": ("students.csv", "PRE_ENROLLED", "Enrolled",
                   "students.csv line 5: column 'District Enrollment': 'Enrolled' is not one of"),
    "date MM/DD/YYYY": ("students.csv", "03/14/2012", "14/03/2012",
                        "students.csv line 2: column 'Date of Birth': '14/03/2012' is not a date"),
    "date MM-DD-YYYY": ("students.csv", "12-31-2010", "02-30-2010",
                        "students.csv line 6: column 'Date of Birth': '02-30-2010' is not a date"),
    "date YYYY/MM/DD": ("students.csv", "2013/01/30", "2013/02/30",
                        "students.csv line 5: column 'Date of Birth': '2013/02/30' is not a date"),
    "date YYYY-MM-DD": ("students.csv", "2011-07-02", "2011-7-02",
                        "students.csv line 3: column 'Date of Birth': '2011-7-02' is not a date"),
    "date in no accepted form": ("students.csv", "2014-11-09", "2014.11.09",
                                 "students.csv line 8: column 'Date of Birth': '2014.11.09'"),
    "21-character id": ("students.csv", "S1006,", "S" + "1" * 20 + ",",
                        "students.csv line 8: column 'Student Id': 'S11111111111111111111' is 21 "
                        "characters long; at most 20 are allowed"),
    "id not letters and digits": ("students.csv", "S1004,", "S-1004,",
                                  "students.csv line 6: column 'Student Id': 'S-1004' may hold "
                                  "only letters and digits"),
    "repeated id": ("students.csv", "S1006,", "S1001,",
                    "students.csv line 8: column 'Student Id': the same Student Id is already on "
                    "line 2"),
    "required value": ("students.csv", "S1004,Smith,", "S1004,,",
                       "students.csv line 6: column 'Last Name': a value is required"),
    "missing column": ("students.csv", ",Race,", ",",
                       "students.csv line 1: column 'Race': missing column"),
    "misnamed column": ("students.csv", "Student Id,", "Student ID,",
                        "students.csv line 1: column 'Student ID': misnamed column: 'Student ID' "
                        "must be spelled 'Student Id'"),
    "misnamed file": ("guardians.csv", "", "Guardians.csv",
                      "Guardians.csv: misnamed file: it must be named 'guardians.csv'"),
    "unknown file": ("absences.csv", "", "absence_list.csv",
                     "absence_list.csv: misnamed file: not a Generic CSV API file name"),
    "permission case": ("user_roles.csv", "IEP,edit,owner", "IEP,Edit,owner",
                        "user_roles.csv line 2: column 'Default': 'Edit' is not one of: none, "
                        "view, edit, owner (lower case)"),
    "max below default": ("user_roles.csv", "ETR,view,edit", "ETR,edit,view",
                          "user_roles.csv line 3: column 'Max': 'view' is below the default "
                          "permission 'edit'"),
    "deleted flag": ("users.csv", "East Elementary,N", "East Elementary,maybe",
                     "users.csv line 3: column 'Deleted': 'maybe' is not one of"),
    "buildings per role": ("users.csv", "Principal,East Elementary",
                           "Principal,East Elementary;West Elementary",
                           "users.csv line 3: column 'Buildings': has 2 building list(s) for 1 "
                           "role(s)"),
    "email": ("users.csv", "admin@applegrove.org", "admin.applegrove.org",
              "users.csv line 4: column 'Email': 'admin.applegrove.org' is not an email"),
    "language": ("guardians.csv", ",vi\n", ",vie\n",
                 "guardians.csv line 5: column 'Language': 'vie' is not one of"),
    "absence of an unknown student": ("absences.csv", "S1006,", "S7777,",
                                      "absences.csv line 5: column 'Student Id': no student "
                                      "'S7777'"),
    "absence date": ("absences.csv", "09-05-2026", "09-31-2026",
                     "absences.csv line 4: column 'Date': '09-31-2026' is not a date"),
    "not RFC 4180": ("users.csv", ",Principal,", ',"Principal,',
                     "users.csv line 3: cannot read the file as RFC 4180 CSV: unterminated CSV "
                     "quoted field: the quote opens in column 'Roles' and is never closed"),
    "extra field": ("absences.csv", "S1002,09-05-2026", "S1002,09-05-2026,x",
                    "absences.csv line 4: cannot read the file as RFC 4180 CSV: extra data"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_epoch_is_refused_and_changes_nothing(root: Path, database_url: str,
                                                      case: str) -> None:
    put(root, "20261128-020000", "district")
    code, _ = run_epochs(root, database_url, now=None)
    before = everything(database_url)
    file, old, new, expected = INVALID[case]
    epoch = put(root, "20261129-020000", "district")
    if old:
        text = (epoch / file).read_bytes()
        assert text.count(old.encode()) >= 1, f"{old!r} not in {file}"
        (epoch / file).write_bytes(text.replace(old.encode(), new.encode(), 1))
    else:
        (epoch / file).rename(epoch / new)
    code, result = run_epochs(root, database_url, now=None)
    assert code == 1 and result["processed"][0]["outcome"] == "Failed"
    log, _ = processing(root, "20261129-020000")
    assert expected in log, log
    assert "Nothing was imported: the database is unchanged." in log
    assert everything(database_url) == before


def test_a_hostile_header_is_refused_without_reading_the_file(tmp_path: Path) -> None:
    epoch = Path(shutil.copytree(DATA / "district", tmp_path / "e"))
    with (epoch / "users.csv").open("wb") as out:  # 64 MiB of commas and no line end
        out.write(b"Email" + b"," * (64 << 20))
    validation = GenericCsvFormat().validate(epoch)
    assert [p.describe() for p in validation.errors] == [
        "users.csv line 1: the header is not RFC 4180 CSV: no line end in the first 64 KiB"]


def test_the_contract_knows_every_format_the_job_registers() -> None:
    """The plugin checks `--format` against the contract: both formats must be there, in the
    order the processor asks them."""
    from district_contract import commands

    from sftpd.formats import registered_formats

    assert tuple(registered_formats()) == commands.FORMATS_KNOWN


# The tables as the release before the first-load path made them: Gender and Language stored
# normalized in `gender` and `language`, with no column for the value as written.
_TABLES_BEFORE_AS_WRITTEN = """
CREATE SCHEMA generic_csv;
CREATE TABLE generic_csv.students (
  student_id text COLLATE "C" PRIMARY KEY, last_name text NOT NULL, middle_name text,
  first_name text NOT NULL, date_of_birth date NOT NULL, gender text NOT NULL,
  district_enrollment text NOT NULL, grade text, address text, city text, state text,
  zip text, race text, district_of_residence text, county_of_residence text,
  district_of_service text, student_reporting_id text, building text NOT NULL,
  building_reporting_id text NOT NULL, sis_internal_id text);
CREATE TABLE generic_csv.guardians (
  student_id text COLLATE "C" NOT NULL, last_name text NOT NULL, first_name text NOT NULL,
  relationship text, email text, phone text, address text, city text, state text, zip text,
  language text);
CREATE INDEX guardians_student_id ON generic_csv.guardians (student_id);
INSERT INTO generic_csv.students (student_id, last_name, first_name, date_of_birth, gender,
  district_enrollment, building, building_reporting_id)
  VALUES ('S0001', 'Earlier', 'Student', '2011-05-06', 'F', 'ENROLLED', 'North', '012345');
INSERT INTO generic_csv.guardians (student_id, last_name, first_name, language)
  VALUES ('S0001', 'Earlier', 'Parent', 'es');
"""


def test_tables_of_the_release_before_are_upgraded_in_place(root: Path,
                                                            database_url: str) -> None:
    """A district database the release before loaded (gender/language stored normalized, no
    *_as_written columns) takes the next load: its tables gain the columns as written, the rows
    already there keep their values, and the load's rows are added beside them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_TABLES_BEFORE_AS_WRITTEN)
    put(root, "20261128-020000", "district")
    code, result = run_epochs(root, database_url, now=None)
    assert code == 0, result
    [done] = result["processed"]
    assert done["outcome"] == "Succeeded", done
    assert rows(database_url, "SELECT gender_as_written, gender FROM generic_csv.students "
                "WHERE student_id = 'S0001'") == [("F", "F")]
    assert rows(database_url, "SELECT language_as_written, language FROM generic_csv.guardians "
                "WHERE student_id = 'S0001'") == [("es", "es")]
    assert rows(database_url, "SELECT count(*) FROM generic_csv.students") == [(7,)]
    assert rows(database_url, "SELECT student_id, gender FROM generic_csv.students "
                "WHERE student_id IN ('S1001', 'S1002') ORDER BY 1") == [("S1001", "F"),
                                                                        ("S1002", "M")]
    # Upgraded once: the next run finds the columns in place and changes nothing more.
    put(root, "20261129-020000", "district")
    code, result = run_epochs(root, database_url, now=None)
    assert code == 0, result
    assert rows(database_url, "SELECT count(*) FROM generic_csv.students") == [(7,)]
