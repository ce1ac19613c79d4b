"""The bulk fast path against a real PostgreSQL server: same tables as the staged path, and
it steps aside (leaving the database as it was) whenever something needs the staged path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sftpd.formats import ImportOutcome
from sftpd.formats.oneroster import OneRosterFormat, Plan, bulkload
from sftpd.formats.oneroster.database import import_staged, prepare
from sftpd.formats.oneroster.spec import Column, tables_for

DATA = Path(__file__).resolve().parents[2] / "data" / "oneroster"
TABLES = ("academic_sessions", "orgs", "courses", "classes", "users", "user_profiles", "roles",
          "enrollments", "demographics")


def plan_for(epoch: Path) -> Plan:
    validation = OneRosterFormat().validate(epoch)
    assert not validation.errors and isinstance(validation.plan, Plan)
    return validation.plan


def import_once(url: str, epoch: Path, fast: bool) -> ImportOutcome | None:
    plan = plan_for(epoch)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        prepare(conn)
        if fast:
            return bulkload.import_bulk(conn, plan.source, plan.entries)
        return import_staged(conn, plan.source, plan.entries)


def contents(url: str) -> dict[str, Any]:
    """Every row of every table, in key order, as PostgreSQL prints it."""
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT coalesce(string_agg(r::text, E'\\n' "
                                f"ORDER BY sourced_id), '') FROM oneroster.{t} r").fetchone()
                for t in TABLES}


def blank_quoted(epoch: Path) -> None:
    """Quote some fields and give a blank as "" (both mean NULL in OneRoster)."""
    path = epoch / "enrollments.csv"
    path.write_text(path.read_text().replace("e2,,,cl-alg-1,org-hs,u-s1,student,false,",
                                             'e2,"",,"cl-alg-1",org-hs,u-s1,"student","",'))


@pytest.mark.parametrize("dataset", ["v1.1-bulk", "v1.2-bulk"])
def test_fast_and_staged_paths_store_the_same_rows(tmp_path: Path, database_url: str,
                                                   postgres: Any, dataset: str) -> None:
    epoch = Path(shutil.copytree(DATA / dataset, tmp_path / "epoch"))
    blank_quoted(epoch)
    assert any(bulkload.loads_directly(e) for e in plan_for(epoch).entries)
    fast = import_once(database_url, epoch, fast=True)
    assert fast is not None and not fast.errors
    other = postgres.create_database(f"staged_{dataset.replace('.', '_').replace('-', '_')}")
    staged = import_once(other, epoch, fast=False)
    assert staged is not None and not staged.errors
    assert [(f.file, f.rows, f.added) for f in fast.files] == [
        (f.file, f.rows, f.added) for f in staged.files]
    assert contents(database_url) == contents(other)
    assert "e2,,,cl-alg-1,org-hs,u-s1,student,,," not in contents(database_url)["enrollments"]


@pytest.mark.parametrize(("change", "why"), [
    (("u-s1,student,false,", "u-s1,student,yes,"), "PostgreSQL reads 'yes' as true"),
    (("2026-08-15,2026-12-20", "2026-8-15,2026-12-20"), "PostgreSQL reads 2026-8-15"),
    (("u-s1,student,false,", "u-s1,pupil,false,"), "not an enrollment role"),
    (("e2,,,cl-alg-1,org-hs,u-s1,", "e2,,,cl-alg-1,org-hs,u-nobody,"), "dangling reference"),
    (("2026-08-15,2026-12-20", "2026-06-31,2026-12-20"), "no 31 June: the cast fails"),
    (("e3,,,", "e2,,,"), "a repeated sourcedId: the key build fails"),
])
def test_doubt_leaves_the_database_as_it_was(tmp_path: Path, database_url: str,
                                             change: tuple[str, str], why: str) -> None:
    good = Path(shutil.copytree(DATA / "v1.1-bulk", tmp_path / "good"))
    assert import_once(database_url, good, fast=True) is not None
    before = contents(database_url)
    bad = Path(shutil.copytree(DATA / "v1.1-bulk", tmp_path / "bad"))
    enrollments = bad / "enrollments.csv"
    text = enrollments.read_text()
    assert change[0] in text
    enrollments.write_text(text.replace(change[0], change[1], 1))

    assert import_once(database_url, bad, fast=True) is None, why
    assert contents(database_url) == before


def test_a_committed_row_the_set_leaves_dangling_makes_it_step_aside(
        tmp_path: Path, database_url: str) -> None:
    """A later bulk users.csv drops a user a committed enrollment still names."""
    good = Path(shutil.copytree(DATA / "v1.1-bulk", tmp_path / "good"))
    assert import_once(database_url, good, fast=True) is not None
    before = contents(database_url)
    later = tmp_path / "later"
    later.mkdir()
    (later / "manifest.csv").write_text("propertyName,value\noneroster.version,1.1\n"
                                        "file.users,bulk\n")
    (later / "users.csv").write_text("".join(
        line for line in (good / "users.csv").read_text().splitlines(keepends=True)
        if not line.startswith("u-s3,")))
    plan = plan_for(later)
    (users,) = plan.entries
    user_ref = tables_for("1.1")["enrollments"].column("userSourcedId")

    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        prepare(conn)
        assert not bulkload._dangling(conn, "enrollments", user_ref)
        bulkload._load(conn, plan.source, users)
        assert bulkload._dangling(conn, "enrollments", user_ref)
        assert not bulkload._dangling(conn, "classes", Column("courseSourcedId", ref="courses"))
        raise psycopg.Rollback()
    assert import_once(database_url, later, fast=True) is None
    assert contents(database_url) == before
