"""SIF 2.x US objects -> the Generic CSV API files (students.csv, guardians.csv, users.csv).

Which SIF element feeds which column is ours (SameGoal does not publish its mapping); the
table is in docs/sif-pull.md. Values are copied as the zone wrote them and left to the
Generic CSV importer to check, so a bad value is reported there with its file, line and column
like any district upload. What cannot become a row at all (a student with no enrollment in a
known school, a staff member without an e-mail address, a contact of a student not pulled) is
counted and named in the pull's result, never guessed.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

from sftpd.formats.generic_csv.spec import GUARDIANS, LANGUAGES, STUDENTS, USERS, FileSpec

STUDENT_PERSONAL: Final = "StudentPersonal"
SCHOOL_INFO: Final = "SchoolInfo"
STAFF_PERSONAL: Final = "StaffPersonal"
STUDENT_SCHOOL_ENROLLMENT: Final = "StudentSchoolEnrollment"
STUDENT_CONTACT: Final = "StudentContact"  # SIF US before 2.3: person and relationship in one
STUDENT_CONTACT_PERSONAL: Final = "StudentContactPersonal"  # SIF US 2.3 on: the person...
STUDENT_CONTACT_RELATIONSHIP: Final = "StudentContactRelationship"  # ...and whose contact
# The objects the agent can request and convert; by default it requests these, in this order.
DEFAULT: Final = (SCHOOL_INFO, STUDENT_PERSONAL, STUDENT_SCHOOL_ENROLLMENT, STUDENT_CONTACT,
                  STAFF_PERSONAL)
SUPPORTED: Final = (*DEFAULT, STUDENT_CONTACT_PERSONAL, STUDENT_CONTACT_RELATIONSHIP)
# Objects that only make rows together: a relationship names a person, a person is nobody's
# contact without one.
NEEDS: Final = {STUDENT_PERSONAL: (STUDENT_SCHOOL_ENROLLMENT, SCHOOL_INFO),
                STUDENT_CONTACT_PERSONAL: (STUDENT_CONTACT_RELATIONSHIP,),
                STUDENT_CONTACT_RELATIONSHIP: (STUDENT_CONTACT_PERSONAL,)}
CONTACTS: Final = (STUDENT_CONTACT, STUDENT_CONTACT_PERSONAL, STUDENT_CONTACT_RELATIONSHIP)
LEGAL_NAME: Final = "04"  # SIF's Name/@Type for the legal name
# SIF writes languages in ISO 639-2; the Generic CSV API's Language column takes ISO 639-1.
ISO_639_2_TO_1: Final = {
    "alb": "sq", "amh": "am", "ara": "ar", "arm": "hy", "ben": "bn", "bos": "bs", "bur": "my",
    "chi": "zh", "cze": "cs", "deu": "de", "dut": "nl", "ell": "el", "eng": "en", "fas": "fa",
    "fra": "fr", "fre": "fr", "ger": "de", "gre": "el", "guj": "gu", "hat": "ht", "hau": "ha",
    "heb": "he", "hin": "hi", "hrv": "hr", "hye": "hy", "ibo": "ig", "ita": "it", "jpn": "ja",
    "khm": "km", "kor": "ko", "kur": "ku", "lao": "lo", "mar": "mr", "mon": "mn", "mya": "my",
    "nep": "ne", "nld": "nl", "pan": "pa", "per": "fa", "pol": "pl", "por": "pt", "pus": "ps",
    "ron": "ro", "rum": "ro", "rus": "ru", "som": "so", "spa": "es", "sqi": "sq", "srp": "sr",
    "swa": "sw", "tam": "ta", "tel": "te", "tgl": "tl", "tha": "th", "tir": "ti", "tur": "tr",
    "ukr": "uk", "urd": "ur", "uzb": "uz", "vie": "vi", "yor": "yo", "zho": "zh"}


def _text(elem: ET.Element | None, *path: str) -> str:
    """The text at a path of child names, one step at a time (ElementTree's fast path for a
    plain name; a path with '/' would go through its Python path engine)."""
    for name in path[:-1]:
        if elem is None:
            return ""
        elem = elem.find(name)
    if elem is None:
        return ""
    return (elem.findtext(path[-1]) or "").strip()


# Stands in for a missing element: every find in it finds nothing.
_NOTHING: Final = ET.Element("_")


def _child(elem: ET.Element, tag: str) -> ET.Element:
    found = elem.find(tag)
    return _NOTHING if found is None else found


def _name(elem: ET.Element) -> ET.Element | None:
    names = elem.findall("Name")
    return next((n for n in names if n.get("Type") == LEGAL_NAME), names[0] if names else None)


def _code(elem: ET.Element | None, *path: str) -> str:
    """A coded value, written <X><Code>c</Code></X>, <X Code="c"/> or <X>c</X>."""
    found = elem
    for name in path:
        found = found.find(name) if found is not None else None
    if found is None:
        return ""
    return _text(found, "Code") or (found.get("Code") or "").strip() or (found.text or "").strip()


def language(code: str) -> str:
    """The ISO 639-1 code for a SIF language code (639-2, or already 639-1); "" if none."""
    lowered = code.strip().lower()
    if lowered in LANGUAGES:
        return lowered
    return ISO_639_2_TO_1.get(lowered, "")


@dataclass
class _Address:
    street: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""


def _address(elem: ET.Element) -> _Address:
    found = elem.find("AddressList")
    found = found.find("Address") if found is not None else None
    if found is None:
        found = elem.find("Address")
    if found is None:
        return _Address()
    street = _text(found, "Street", "Line1")
    more = _text(found, "Street", "Line2")
    return _Address(f"{street}, {more}" if street and more else street or more,
                    _text(found, "City"), _text(found, "StateProvince"),
                    _text(found, "PostalCode"))


@dataclass
class _Enrollment:
    school: str
    entry: str
    exit: str
    grade: str
    time_frame: str

    def status(self, today: date) -> str:
        if self.exit and self.exit <= today.isoformat():
            return "WITHDREW"
        if self.time_frame == "Future" or (self.entry and self.entry > today.isoformat()):
            return "PRE_ENROLLED"
        return "ENROLLED"


@dataclass
class Conversion:
    """What the zone delivered, gathered object by object, then written as CSV files."""

    today: date
    students: dict[str, dict[str, str]] = field(default_factory=dict)  # by RefId
    schools: dict[str, tuple[str, str]] = field(default_factory=dict)  # RefId: name, id
    enrollments: dict[str, list[_Enrollment]] = field(default_factory=dict)  # by student
    contacts: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    people: dict[str, dict[str, str]] = field(default_factory=dict)  # StudentContactPersonal
    relationships: list[tuple[str, str, str]] = field(default_factory=list)  # student, person
    staff: list[dict[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, name: str, elem: ET.Element) -> None:
        """Take one delivered object (its tags without namespace)."""
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(self, elem)

    def _student(self, elem: ET.Element) -> None:
        # The busiest object (one per student): plain finds, no path strings.
        name = _name(elem)
        if name is None:
            name = _NOTHING
        address = _address(elem)
        demographics = _child(elem, "Demographics")
        races = [(r.findtext("Code") or r.get("Code") or "").strip()
                 for r in _child(demographics, "RaceList")]
        ref = elem.get("RefId") or ""
        self.students[ref] = {
            "Student Id": (elem.findtext("LocalId") or "").strip(),
            "Last Name": (name.findtext("LastName") or "").strip(),
            "Middle Name": (name.findtext("MiddleName") or "").strip(),
            "First Name": (name.findtext("FirstName") or "").strip(),
            "Date of Birth": (demographics.findtext("BirthDate") or "").strip(),
            "Gender": (demographics.findtext("Gender") or "").strip(),
            "Address": address.street, "City": address.city, "State": address.state,
            "Zip": address.zip,
            "Race": ";".join(r for r in races if r),
            "Student Reporting Id": (elem.findtext("StateProvinceId") or "").strip(),
            "SIS Internal ID": ref,
        }

    def _school(self, elem: ET.Element) -> None:
        self.schools[elem.get("RefId") or ""] = (
            _text(elem, "SchoolName"),
            _text(elem, "StateProvinceId") or _text(elem, "LocalId"))

    def _enrollment(self, elem: ET.Element) -> None:
        self.enrollments.setdefault(elem.get("StudentPersonalRefId") or "", []).append(
            _Enrollment(elem.get("SchoolInfoRefId") or "",
                        (elem.findtext("EntryDate") or "").strip(),
                        (elem.findtext("ExitDate") or "").strip(), _code(elem, "GradeLevel"),
                        elem.get("TimeFrame") or ""))

    def _contact(self, elem: ET.Element) -> None:
        self.contacts.append((elem.get("StudentPersonalRefId") or "", self._person(elem)))

    def _contact_personal(self, elem: ET.Element) -> None:
        self.people[elem.get("RefId") or ""] = self._person(elem)

    def _relationship(self, elem: ET.Element) -> None:
        # The keys are attributes in the US schemas; child elements are read as well.
        self.relationships.append((
            elem.get("StudentPersonalRefId") or _text(elem, "StudentPersonalRefId"),
            elem.get("StudentContactPersonalRefId")
            or _text(elem, "StudentContactPersonalRefId"),
            _code(elem, "Relationship")))

    @staticmethod
    def _person(elem: ET.Element) -> dict[str, str]:
        name = _name(elem)
        address = _address(elem)
        return {
            "Last Name": _text(name, "LastName"),
            "First Name": _text(name, "FirstName"),
            "Relationship": _code(elem, "Relationship"),
            "Email": _text(elem, "EmailList", "Email") or _text(elem, "Email"),
            "Phone": (_text(elem, "PhoneNumberList", "PhoneNumber", "Number")
                      or _text(elem, "PhoneNumber", "Number")),
            "Address": address.street, "City": address.city, "State": address.state,
            "Zip": address.zip,
            "Language": language(_code(elem, "Demographics", "LanguageList", "Language")),
        }

    def _staff_member(self, elem: ET.Element) -> None:
        name = _name(elem)
        self.staff.append({
            "Email": _text(elem, "EmailList", "Email") or _text(elem, "Email"),
            "Last Name": _text(name, "LastName"),
            "First Name": _text(name, "FirstName"),
        })

    def _current(self, student_ref: str) -> _Enrollment | None:
        """The enrollment that decides a student's building: an open one in a known school
        first, then the latest entry."""
        known = [e for e in self.enrollments.get(student_ref, []) if e.school in self.schools]
        if not known:
            return None
        return max(known, key=lambda e: (not e.exit, e.entry))

    def write(self, directory: Path, requested: tuple[str, ...]) -> dict[str, int]:
        """Write the Generic CSV files the requested objects feed; rows per file."""
        rows: dict[str, int] = {}
        if STUDENT_PERSONAL in requested:
            rows[STUDENTS.file] = _write(directory, STUDENTS, self._student_rows())
        if STUDENT_PERSONAL in requested and any(c in requested for c in CONTACTS):
            rows[GUARDIANS.file] = _write(directory, GUARDIANS, self._guardian_rows())
        if STAFF_PERSONAL in requested:
            rows[USERS.file] = _write(directory, USERS, self._user_rows())
        return rows

    def _student_rows(self) -> list[dict[str, str]]:
        rows = []
        for ref, student in self.students.items():
            enrollment = self._current(ref)
            if enrollment is None:
                self.skipped["StudentPersonal without an enrollment in a pulled school"] += 1
                continue
            school, school_id = self.schools[enrollment.school]
            rows.append({**student, "District Enrollment": enrollment.status(self.today),
                         "Grade": enrollment.grade, "Building": school,
                         "Building Reporting Id": school_id})
        return sorted(rows, key=lambda r: r["Student Id"])

    def _guardian_rows(self) -> list[dict[str, str]]:
        rows = []
        contacts = list(self.contacts)
        for student_ref, person_ref, relationship in self.relationships:
            person = self.people.get(person_ref)
            if person is None:
                self.skipped["StudentContactRelationship naming no pulled "
                             "StudentContactPersonal"] += 1
                continue
            contacts.append((student_ref, {**person, "Relationship": relationship}))
        for student_ref, contact in contacts:
            student = self.students.get(student_ref)
            if student is None or self._current(student_ref) is None:
                self.skipped["StudentContact of a student not in students.csv"] += 1
                continue
            rows.append({"Student Id": student["Student Id"], **contact})
        return sorted(rows, key=lambda r: [r.get(c.name, "") for c in GUARDIANS.columns])

    def _user_rows(self) -> list[dict[str, str]]:
        rows = []
        for member in self.staff:
            if not member["Email"]:
                self.skipped["StaffPersonal without an e-mail address"] += 1
                continue
            rows.append(member)
        return sorted(rows, key=lambda r: r["Email"].lower())


_HANDLERS: Final = {STUDENT_PERSONAL: Conversion._student, SCHOOL_INFO: Conversion._school,
                    STUDENT_SCHOOL_ENROLLMENT: Conversion._enrollment,
                    STUDENT_CONTACT: Conversion._contact, STAFF_PERSONAL: Conversion._staff_member,
                    STUDENT_CONTACT_PERSONAL: Conversion._contact_personal,
                    STUDENT_CONTACT_RELATIONSHIP: Conversion._relationship}


def _write(directory: Path, spec: FileSpec, rows: list[dict[str, str]]) -> int:
    """One RFC 4180 file (CRLF, quoted where needed) with the spec's exact header."""
    header = [c.name for c in spec.columns]
    with (directory / spec.file).open("x", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows([row.get(column, "") for column in header] for row in rows)
    return len(rows)
