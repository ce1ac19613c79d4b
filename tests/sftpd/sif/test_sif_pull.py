"""`sftpd sif-pull` against the ZIS stand-in: the epoch, its import into PostgreSQL, packets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from district_devtools.sif import data
from district_devtools.sif.testca import ZonePKI

from sftpd import tree
from tests.sftpd.sif.conftest import (
    AGENT,
    STUDENTS,
    Zones,
    _env,
    process_epochs,
    pull,
    upload_entries,
)

pytestmark = pytest.mark.postgres
EPOCH = re.compile(r"^\d{8}-\d{6}$")
OBJECTS = ("SchoolInfo", "StudentPersonal", "StudentSchoolEnrollment", "StudentContact",
           "StaffPersonal")
LANGUAGE = dict(data.LANGUAGES)


def expected_students(district: data.District) -> set[tuple[str, ...]]:
    """The students.csv rows the made-up district should give, worked out from its data."""
    rows = set()
    for s in district.students:
        current = s.current
        if current is None:
            continue
        rows.add((s.local_id, s.last, s.first, s.middle or "", s.birth_date, s.gender,
                  "WITHDREW" if current.exit else "ENROLLED", current.grade, s.street, s.city,
                  s.state, s.zip, ";".join(s.races), s.state_id, current.school.name,
                  current.school.state_id, s.ref_id))
    return rows


def db_rows(database_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def db_students(database_url: str) -> set[tuple[str, ...]]:
    rows = db_rows(database_url, """
        SELECT student_id, last_name, first_name, coalesce(middle_name, ''),
               to_char(date_of_birth, 'YYYY-MM-DD'), gender, district_enrollment, grade,
               address, city, state, zip, race, student_reporting_id, building,
               building_reporting_id, sis_internal_id
        FROM generic_csv.students""")
    return {tuple(r) for r in rows}


def test_pull_publishes_an_epoch_that_imports_into_postgres(
        zones: Zones, zone_pki: ZonePKI, root: Path, basic_auth: Path,
        database_url: str) -> None:
    zone = zones.start()
    run = pull(root, zone.url, basic_auth, zone_pki.ca_cert)
    assert run.code == 0, run.stderr
    assert run.result is not None
    result = run.result
    assert result["kind"] == "pull" and result["outcome"] == "Succeeded", result
    epoch = result["epoch"]
    assert EPOCH.match(epoch)
    assert upload_entries(root) == [epoch]  # nothing hidden left behind
    published = root / tree.UPLOAD / epoch
    assert (published / "COMPLETE").read_bytes() == b""
    district = data.make_district(STUDENTS)
    counts = {"SchoolInfo": len(district.schools), "StudentPersonal": STUDENTS,
              "StudentSchoolEnrollment": sum(len(s.enrollments) for s in district.students),
              "StudentContact": sum(len(s.contacts) for s in district.students),
              "StaffPersonal": len(district.staff)}
    assert result["objects"] == [f"{n}={counts[n]}" for n in OBJECTS]
    assert result["messages"] == result["packets"] == len(OBJECTS)
    # The raw replies are kept for audit, byte for byte as the zone delivered them.
    raw = sorted((published / "sif").iterdir())
    assert [p.name for p in raw] == [f"{i:05d}-{n}-packet1.xml" for i, n in
                                     enumerate(OBJECTS, start=1)]
    assert "Peña".encode() in b"".join(p.read_bytes() for p in raw)

    # The conversation, as the zone saw it.
    (register,) = zone.entries("SIF_Register")
    assert register == {"kind": "SIF_Register", "source": AGENT, "name": AGENT,
                        "version": "2.0r1", "mode": "Pull", "max_buffer": "10000000"}
    assert [e["object"] for e in zone.entries("SIF_Request")] == list(OBJECTS)
    delivered = [e["msg_id"] for e in zone.entries("delivered")]
    acked = [e["original"] for e in zone.entries("SIF_Ack")]
    assert acked == delivered and len(set(delivered)) == len(OBJECTS)
    assert {e["code"] for e in zone.entries("SIF_Ack")} == {"1"}

    # The real epochs job imports it like any district upload.
    epochs = process_epochs(root, database_url)
    assert epochs.code == 0, epochs.stderr
    assert epochs.result is not None
    (processed,) = epochs.result["processed"]
    assert (processed["name"], processed["outcome"], processed["format"]) == (
        epoch, "Succeeded", "generic-csv"), epochs.result
    assert db_students(database_url) == expected_students(district)
    guardians = db_rows(database_url, """
        SELECT student_id, last_name, first_name, relationship, coalesce(email, ''),
               phone, coalesce(language, '') FROM generic_csv.guardians""")
    expected_guardians = sorted(
        (s.local_id, c.last, c.first, c.relationship, c.email, c.phone, LANGUAGE[c.language])
        for s in district.students if s.current is not None for c in s.contacts)
    assert sorted(tuple(g) for g in guardians) == expected_guardians
    users = db_rows(database_url, "SELECT email, last_name, first_name FROM generic_csv.users")
    assert sorted(tuple(u) for u in users) == sorted(
        (s.email, s.last, s.first) for s in district.staff if s.email)
    # What could not become a row is said, not guessed.
    assert "2 StudentPersonal without an enrollment in a pulled school" in result["message"]
    log = (root / tree.UPLOAD_PROCESSED / epoch / "processing.log").read_text()
    assert "'sif' is not a plain file; ignored" in log


def test_a_second_pull_of_unchanged_data_duplicates_nothing(
        zones: Zones, zone_pki: ZonePKI, root: Path, basic_auth: Path,
        database_url: str) -> None:
    zone = zones.start()
    first = pull(root, zone.url, basic_auth, zone_pki.ca_cert)
    assert first.code == 0, first.stderr
    assert process_epochs(root, database_url).code == 0
    before = {t: db_rows(database_url, f"SELECT count(*) FROM generic_csv.{t}")[0][0]
              for t in ("students", "guardians", "users")}
    students_before = db_students(database_url)
    second = pull(root, zone.url, basic_auth, zone_pki.ca_cert)
    assert second.code == 0, second.stderr
    assert second.result is not None and first.result is not None
    assert second.result["epoch"] > first.result["epoch"]
    epochs = process_epochs(root, database_url)
    assert epochs.code == 0 and epochs.result is not None
    (processed,) = epochs.result["processed"]
    assert processed["outcome"] == "Succeeded"
    after = {t: db_rows(database_url, f"SELECT count(*) FROM generic_csv.{t}")[0][0]
             for t in before}
    assert after == before
    assert db_students(database_url) == students_before
    report = json.loads((root / tree.UPLOAD_PROCESSED / second.result["epoch"]
                         / "processing.json").read_text())
    files = {f["file"]: f for f in report["files"]}
    assert files["students.csv"]["added"] == files["students.csv"]["changed"] == 0
    assert files["users.csv"]["added"] == files["users.csv"]["changed"] == 0


def test_multi_packet_responses_are_reassembled(
        zones: Zones, zone_pki: ZonePKI, tmp_path: Path, basic_auth: Path) -> None:
    zone = zones.start()
    whole_root, packets_root = tmp_path / "whole", tmp_path / "packets"
    for r in (whole_root, packets_root):
        tree.ensure_tree(r)
    whole = pull(whole_root, zone.url, basic_auth, zone_pki.ca_cert)
    small = 16_384
    # The object with the most packets last: its response must be waited for to the end.
    packets = pull(packets_root, zone.url, basic_auth, zone_pki.ca_cert,
                   "--max-buffer-size", str(small), "--objects",
                   "SchoolInfo,StudentPersonal,StudentSchoolEnrollment,StaffPersonal,"
                   "StudentContact")
    assert whole.code == packets.code == 0, packets.stderr
    assert whole.result is not None and packets.result is not None
    assert packets.result["packets"] > 20
    assert sorted(packets.result["objects"]) == sorted(whole.result["objects"])
    delivered = {e["msg_id"] for e in zone.entries("delivered")}
    assert {e["original"] for e in zone.entries("SIF_Ack")} == delivered  # queue drained
    sizes = [e["bytes"] for e in zone.entries("delivered")[len(OBJECTS):]]
    assert max(sizes) <= small and len(sizes) == packets.result["packets"]
    by_object: dict[str, list[int]] = {}
    for e in zone.entries("delivered")[len(OBJECTS):]:
        by_object.setdefault(e["object"], []).append(e["packet"])
    assert all(p == list(range(1, len(p) + 1)) for p in by_object.values())
    assert len(by_object["StudentContact"]) > 5
    # The same data, whichever way it came.
    for name in ("students.csv", "guardians.csv", "users.csv"):
        assert ((packets_root / tree.UPLOAD / packets.result["epoch"] / name).read_bytes()
                == (whole_root / tree.UPLOAD / whole.result["epoch"] / name).read_bytes())
    assert len(list((packets_root / tree.UPLOAD / packets.result["epoch"] / "sif").iterdir())
               ) == packets.result["packets"]


def test_a_client_certificate_authenticates_the_agent(
        zones: Zones, zone_pki: ZonePKI, root: Path, cert_auth: Path,
        basic_auth: Path) -> None:
    zone = zones.start(client_cert=True)
    without = pull(root, zone.url, basic_auth, zone_pki.ca_cert, "--timeout-seconds", "20")
    assert without.code == 1 and without.result is not None
    assert without.result["reason"] == "TlsFailed", without.result
    assert "client certificate" in without.result["message"]
    assert upload_entries(root) == []
    run = pull(root, zone.url, cert_auth, zone_pki.ca_cert)
    assert run.code == 0, run.stderr
    assert run.result is not None and run.result["outcome"] == "Succeeded"
    assert upload_entries(root) == [run.result["epoch"]]


def test_responses_left_by_a_killed_pull_are_acknowledged_and_ignored(
        zones: Zones, zone_pki: ZonePKI, tmp_path: Path, basic_auth: Path) -> None:
    zone = zones.start()
    killed_root, root = tmp_path / "killed", tmp_path / "clean"
    for r in (killed_root, root):
        tree.ensure_tree(r)
    argv = [sys.executable, "-m", "sftpd", "sif-pull", "--root", str(killed_root),
            "--zone-url", zone.url, "--source-id", AGENT, "--ca-file", str(zone_pki.ca_cert),
            "--auth-dir", str(basic_auth), "--max-buffer-size", "8192"]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(zone.entries("SIF_Ack")) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = len(zone.entries("delivered"))
    run = pull(root, zone.url, basic_auth, zone_pki.ca_cert)
    assert run.code == 0, run.stderr
    assert run.result is not None
    ignored = [e for e in run.events if e["event"] == "pull.ignored"]
    assert len(ignored) > 10  # the killed run's packets, still queued for the same agent
    district = data.make_district(STUDENTS)
    assert run.result["objects"][1] == f"StudentPersonal={STUDENTS}"  # none counted twice
    epoch = root / tree.UPLOAD / run.result["epoch"]
    assert len((epoch / "students.csv").read_text().splitlines()) == 1 + len(
        expected_students(district))
    acked = {e["original"] for e in zone.entries("SIF_Ack")}
    assert {e["msg_id"] for e in zone.entries("delivered")[left:]} <= acked


def test_the_epochs_job_never_takes_a_pull_being_built(
        zones: Zones, zone_pki: ZonePKI, root: Path, basic_auth: Path,
        database_url: str) -> None:
    zone = zones.start()
    run = pull(root, zone.url, basic_auth, zone_pki.ca_cert)
    assert run.code == 0 and run.result is not None
    # The same files, as a build looks just before its rename (COMPLETE already in).
    building = root / tree.UPLOAD / f".sftpd-pull-{run.result['epoch']}"
    (root / tree.UPLOAD / run.result["epoch"]).rename(building)
    epochs = process_epochs(root, database_url)
    assert epochs.code == 0 and epochs.result is not None
    assert epochs.result["outcome"] == "NothingToDo", epochs.result
    assert upload_entries(root) == [building.name]


def test_the_later_contact_objects_give_the_same_guardians(
        zones: Zones, zone_pki: ZonePKI, tmp_path: Path, basic_auth: Path) -> None:
    zone = zones.start()
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    for r in (old_root, new_root):
        tree.ensure_tree(r)
    old = pull(old_root, zone.url, basic_auth, zone_pki.ca_cert)
    # The District CRD's default objects: SIF US 2.3's person and relationship objects.
    new = pull(new_root, zone.url, basic_auth, zone_pki.ca_cert, "--objects",
               "StudentPersonal,SchoolInfo,StaffPersonal,StudentSchoolEnrollment,"
               "StudentContactPersonal,StudentContactRelationship")
    assert old.code == new.code == 0, new.stderr
    assert old.result is not None and new.result is not None
    contacts = sum(len(s.contacts) for s in data.make_district(STUDENTS).students)
    assert f"StudentContactRelationship={contacts}" in new.result["objects"]
    for name in ("students.csv", "guardians.csv", "users.csv"):
        assert ((new_root / tree.UPLOAD / new.result["epoch"] / name).read_bytes()
                == (old_root / tree.UPLOAD / old.result["epoch"] / name).read_bytes()), name
