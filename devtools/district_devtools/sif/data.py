"""A made-up district as SIF 2.x US objects: schools, students, enrollments, contacts, staff.

Deterministic for a seed. UTF-8 names and addresses (Peña, Nguyễn, Zoë, O'Brien, Müller),
several schools, students with a current enrollment (some withdrawn, some with an earlier
enrollment in another school, a few with none at all), one or two contacts each with a
language, staff with and without e-mail. The objects follow the SIF 2.0r1 US data model's
element names for what the agent reads; they are not schema-complete (no SIF_Metadata,
optional elements the agent does not read are mostly left out).
"""

from __future__ import annotations

import random
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date, timedelta

LAST_NAMES = ("García", "Nguyễn", "Smith", "O'Brien", "Müller", "Johnson", "Peña", "Kowalski",
              "Okafor", "Hernández", "Lee", "Ørsted", "Williams", "Brown", "Dubois", "Yılmaz"  # noqa: RUF001 (a Turkish name),
              "Haddad", "Tanaka", "Ivanova", "Martin", "Rossi", "Abdi", "Xiong", "Cohen")
FIRST_NAMES = ("José", "Zoë", "Liam", "Olivia", "Nguyệt", "Amélie", "Noah", "Chloé", "Mateo",
               "Aaliyah", "Søren", "Fatima", "Ethan", "Ava", "Björn", "Mía", "Kai", "Leila",
               "Jürgen", "Anaïs", "Hamza", "Grace", "Dmitri", "Nayeli")
STREETS = ("Calle de la Peña", "Main Street", "Oak Avenue", "Rue Saint-Émilion",
           "Lincoln Boulevard", "Cedar Lane, Apt. 4", "Elm Street", "Camino Real")
CITIES = (("Springfield", "OH", "45501"), ("Española", "NM", "87532"),
          ("Coeur d'Alene", "ID", "83814"), ("Cañon City", "CO", "81212"))
SCHOOLS = ("Lincoln Elementary", "Sojourner Truth Middle School", "César Chávez High School",
           "North Elementary", "Ridgeview Academy")
GRADES = ("KG", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12")
RACES = ("0998", "1506", "0999", "0644", "2055", "1348")
RELATIONSHIPS = ("Mother", "Father", "Guardian", "Grandparent", "Aunt")
LANGUAGES = (("eng", "en"), ("spa", "es"), ("vie", "vi"), ("som", "so"), ("hmn", ""))
TODAY = date(2026, 12, 1)


@dataclass
class School:
    ref_id: str
    local_id: str
    state_id: str
    name: str


@dataclass
class Enrollment:
    ref_id: str
    school: School
    entry: str
    exit: str
    grade: str


@dataclass
class Contact:
    ref_id: str
    last: str
    first: str
    relationship: str
    email: str
    phone: str
    language: str  # ISO 639-2 as SIF writes it


@dataclass
class Student:
    ref_id: str
    local_id: str
    state_id: str
    last: str
    first: str
    middle: str
    birth_date: str
    gender: str
    street: str
    city: str
    state: str
    zip: str
    races: tuple[str, ...]
    enrollments: list[Enrollment] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)

    @property
    def current(self) -> Enrollment | None:
        """The enrollment the agent should report: open first, then the latest entry."""
        if not self.enrollments:
            return None
        return max(self.enrollments, key=lambda e: (not e.exit, e.entry))


@dataclass
class Staff:
    ref_id: str
    local_id: str
    last: str
    first: str
    email: str


@dataclass
class District:
    schools: list[School]
    students: list[Student]
    staff: list[Staff]


def _ref(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128)).hex.upper()


def make_district(students: int, seed: int = 16) -> District:
    """`students` students in five schools; every 150th has no enrollment at all."""
    rng = random.Random(seed)  # noqa: S311 (made-up data, reproducible by seed)
    schools = [School(_ref(rng), str(101 + i), f"0{43210 + i}", name)
               for i, name in enumerate(SCHOOLS)]
    people = []
    for i in range(students):
        city, state, zip_code = rng.choice(CITIES)
        born = date(2008, 9, 1) + timedelta(days=rng.randrange(13 * 365))
        student = Student(
            _ref(rng), f"S{100000 + i}", f"OH{rng.randrange(10**8):08d}",
            rng.choice(LAST_NAMES), rng.choice(FIRST_NAMES),
            rng.choice(("", "María", "Lee", "Ann", "Thị")), born.isoformat(),
            rng.choice("MF"), f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}", city, state,
            zip_code, tuple(rng.sample(RACES, rng.choice((1, 1, 2)))))
        if i % 150 != 149:
            school = rng.choice(schools)
            entry = date(2026, 8, 20) - timedelta(days=rng.randrange(3) * 365)
            withdrawn = rng.random() < 0.05
            student.enrollments.append(Enrollment(
                _ref(rng), school, entry.isoformat(),
                (TODAY - timedelta(days=rng.randrange(1, 60))).isoformat() if withdrawn else "",
                rng.choice(GRADES)))
            if rng.random() < 0.08:
                earlier = rng.choice([s for s in schools if s is not school])
                student.enrollments.append(Enrollment(
                    _ref(rng), earlier, "2023-08-21", "2024-06-05", rng.choice(GRADES)))
        for _ in range(rng.choice((1, 2, 2))):
            language = rng.choice(LANGUAGES)[0]
            first = rng.choice(FIRST_NAMES)
            student.contacts.append(Contact(
                _ref(rng), rng.choice((student.last, rng.choice(LAST_NAMES))), first,
                rng.choice(RELATIONSHIPS),
                f"{first.lower().encode('ascii', 'ignore').decode()}{i}@example.org"
                if rng.random() < 0.8 else "",
                f"555-{rng.randrange(1000):03d}-{rng.randrange(10000):04d}", language))
        people.append(student)
    staff = [Staff(_ref(rng), f"T{5000 + i}", rng.choice(LAST_NAMES), rng.choice(FIRST_NAMES),
                   "" if i % 12 == 11 else f"teacher{i}@district.example.org")
             for i in range(max(3, students // 15))]
    return District(schools, people, staff)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = text
    return child


def _name(parent: ET.Element, last: str, first: str, middle: str = "") -> None:
    name = _sub(parent, "Name", Type="04")
    _sub(name, "LastName", last)
    _sub(name, "FirstName", first)
    if middle:
        _sub(name, "MiddleName", middle)


def _address(parent: ET.Element, street: str, city: str, state: str, zip_code: str) -> None:
    address = _sub(_sub(parent, "AddressList"), "Address", Type="0765")
    _sub(_sub(address, "Street"), "Line1", street)
    _sub(address, "City", city)
    _sub(address, "StateProvince", state)
    _sub(address, "Country", "US")
    _sub(address, "PostalCode", zip_code)


def school_xml(school: School) -> ET.Element:
    elem = ET.Element("SchoolInfo", RefId=school.ref_id)
    _sub(elem, "LocalId", school.local_id)
    _sub(elem, "StateProvinceId", school.state_id)
    _sub(elem, "SchoolName", school.name)
    return elem


def student_xml(student: Student) -> ET.Element:
    elem = ET.Element("StudentPersonal", RefId=student.ref_id)
    _sub(elem, "LocalId", student.local_id)
    _sub(elem, "StateProvinceId", student.state_id)
    _name(elem, student.last, student.first, student.middle)
    demographics = _sub(elem, "Demographics")
    races = _sub(demographics, "RaceList")
    for code in student.races:
        _sub(_sub(races, "Race"), "Code", code)
    _sub(demographics, "Gender", student.gender)
    _sub(demographics, "BirthDate", student.birth_date)
    _address(elem, student.street, student.city, student.state, student.zip)
    return elem


def enrollment_xml(student: Student, enrollment: Enrollment) -> ET.Element:
    elem = ET.Element("StudentSchoolEnrollment", RefId=enrollment.ref_id,
                      StudentPersonalRefId=student.ref_id,
                      SchoolInfoRefId=enrollment.school.ref_id, MembershipType="01",
                      TimeFrame="Historical" if enrollment.exit else "Current",
                      SchoolYear="2027")
    _sub(elem, "EntryDate", enrollment.entry)
    _sub(_sub(elem, "GradeLevel"), "Code", enrollment.grade)
    if enrollment.exit:
        _sub(elem, "ExitDate", enrollment.exit)
        _sub(_sub(elem, "ExitType"), "Code", "1908")
    return elem


def contact_xml(student: Student, contact: Contact) -> ET.Element:
    elem = ET.Element("StudentContact", RefId=contact.ref_id,
                      StudentPersonalRefId=student.ref_id, Type="Parent")
    _name(elem, contact.last, contact.first)
    _sub(_sub(elem, "Relationship"), "Code", contact.relationship)
    _address(elem, student.street, student.city, student.state, student.zip)
    phone = _sub(_sub(elem, "PhoneNumberList"), "PhoneNumber", Type="0096")
    _sub(phone, "Number", contact.phone)
    if contact.email:
        _sub(_sub(elem, "EmailList"), "Email", contact.email, Type="Primary")
    language = _sub(_sub(_sub(elem, "Demographics"), "LanguageList"), "Language")
    _sub(language, "Code", contact.language)
    return elem


def contact_personal_xml(contact: Contact, student: Student) -> ET.Element:
    """SIF US 2.3 on: the contact as a person of its own (RefId = the contact's)."""
    elem = ET.Element("StudentContactPersonal", RefId=contact.ref_id)
    _name(elem, contact.last, contact.first)
    _address(elem, student.street, student.city, student.state, student.zip)
    phone = _sub(_sub(elem, "PhoneNumberList"), "PhoneNumber", Type="0096")
    _sub(phone, "Number", contact.phone)
    if contact.email:
        _sub(_sub(elem, "EmailList"), "Email", contact.email, Type="Primary")
    language = _sub(_sub(_sub(elem, "Demographics"), "LanguageList"), "Language")
    _sub(language, "Code", contact.language)
    return elem


def relationship_xml(student: Student, contact: Contact) -> ET.Element:
    """SIF US 2.3 on: whose contact the person is, and how."""
    elem = ET.Element("StudentContactRelationship", StudentPersonalRefId=student.ref_id,
                      StudentContactPersonalRefId=contact.ref_id)
    _sub(_sub(elem, "Relationship"), "Code", contact.relationship)
    return elem


def staff_xml(staff: Staff) -> ET.Element:
    elem = ET.Element("StaffPersonal", RefId=staff.ref_id)
    _sub(elem, "LocalId", staff.local_id)
    _name(elem, staff.last, staff.first)
    if staff.email:
        _sub(_sub(elem, "EmailList"), "Email", staff.email, Type="Primary")
    return elem


def objects(district: District, name: str) -> list[bytes]:
    """Every object of one SIF object name, each serialized (UTF-8, no declaration)."""
    elems: list[ET.Element]
    if name == "SchoolInfo":
        elems = [school_xml(s) for s in district.schools]
    elif name == "StudentPersonal":
        elems = [student_xml(s) for s in district.students]
    elif name == "StudentSchoolEnrollment":
        elems = [enrollment_xml(s, e) for s in district.students for e in s.enrollments]
    elif name == "StudentContact":
        elems = [contact_xml(s, c) for s in district.students for c in s.contacts]
    elif name == "StudentContactPersonal":
        elems = [contact_personal_xml(c, s) for s in district.students for c in s.contacts]
    elif name == "StudentContactRelationship":
        elems = [relationship_xml(s, c) for s in district.students for c in s.contacts]
    elif name == "StaffPersonal":
        elems = [staff_xml(s) for s in district.staff]
    else:
        raise KeyError(name)
    return [ET.tostring(e, encoding="unicode").encode("utf-8") for e in elems]
