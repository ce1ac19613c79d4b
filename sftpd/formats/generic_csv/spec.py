"""SameGoal's Generic CSV API files: columns in order, required and key flags, value kinds.

students.csv is the public guide's list, column for column. The guide does not publish the
columns of the other four files; theirs here are ours (docs/generic-csv.md says which).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GENDERS = ("M", "F", "m", "f", "male", "female", "Male", "Female")
ENROLLMENTS = ("PRE_ENROLLED", "ENROLLED", "TRANSFERRED", "WITHDREW", "DROPPED_OUT",
               "GRADUATED", "INACTIVE", "HISTORICAL_IDLE")
# Lowest first: a role's maximum permission on a form is never below its default.
PERMISSIONS = ("none", "view", "edit", "owner")
FLAGS = ("Y", "N", "y", "n", "Yes", "No", "yes", "no", "true", "false", "TRUE", "FALSE")
DATE_FORMS = "MM/DD/YYYY, MM-DD-YYYY, YYYY/MM/DD or YYYY-MM-DD"
STUDENT_ID_LENGTH = 20
# ISO 639-1 (two-letter language codes).
_ISO_639_1 = """
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da
de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz
ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln
lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi
pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti
tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu"""
LANGUAGES = frozenset(_ISO_639_1.split())


@dataclass(frozen=True)
class Column:
    """One column: its exact header name, value kind, and whether a value is required.

    kind: text | id (letters and digits, at most 20) | date (the four forms) | gender |
    enrollment | permission | flag (yes/no) | language (ISO 639-1) | email.
    """

    name: str
    kind: str = "text"
    required: bool = False
    # Older header names the guide still accepts in this column's place.
    aliases: tuple[str, ...] = ()

    @property
    def sql_name(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


@dataclass(frozen=True)
class FileSpec:
    """One file of the API: its exact name and its columns in order."""

    name: str
    columns: tuple[Column, ...]
    public: bool  # the column list is the public guide's (else it is ours)

    @property
    def file(self) -> str:
        return f"{self.name}.csv"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


STUDENTS = FileSpec("students", (
    Column("Student Id", "id", required=True),
    Column("Last Name", required=True),
    Column("Middle Name"),
    Column("First Name", required=True),
    Column("Date of Birth", "date", required=True),
    Column("Gender", "gender", required=True),
    Column("District Enrollment", "enrollment", required=True),
    Column("Grade"),
    Column("Address"),
    Column("City"),
    Column("State"),
    Column("Zip"),
    Column("Race"),
    Column("District of Residence"),
    Column("County of Residence"),
    Column("District of Service"),
    Column("Student Reporting Id"),
    Column("Building", required=True),
    Column("Building Reporting Id", required=True, aliases=("Building IRN",)),
    Column("SIS Internal ID"),
), public=True)

GUARDIANS = FileSpec("guardians", (
    Column("Student Id", "id", required=True),
    Column("Last Name", required=True),
    Column("First Name", required=True),
    Column("Relationship"),
    Column("Email"),
    Column("Phone"),
    Column("Address"),
    Column("City"),
    Column("State"),
    Column("Zip"),
    Column("Language", "language"),
), public=False)

USERS = FileSpec("users", (
    Column("Email", "email", required=True),
    Column("Last Name", required=True),
    Column("First Name", required=True),
    Column("Roles"),
    Column("Buildings"),
    Column("Deleted", "flag"),
), public=False)

USER_ROLES = FileSpec("user_roles", (
    Column("Role", required=True),
    Column("Form", required=True),
    Column("Default", "permission", required=True),
    Column("Max", "permission", required=True),
), public=False)

ABSENCES = FileSpec("absences", (
    Column("Student Id", "id", required=True),
    Column("Date", "date", required=True),
), public=False)

# Load order: students before the guardians and absences that name them.
FILES: dict[str, FileSpec] = {f.file: f for f in (STUDENTS, GUARDIANS, USERS, USER_ROLES,
                                                 ABSENCES)}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


# What a misnamed file most likely meant: the same name in another case, singular, or with
# other separators (a common mistake the guide lists).
_NEAR = {_squash(k): v for v, keys in {
    "students.csv": ("students", "student"),
    "guardians.csv": ("guardians", "guardian", "parents", "parent", "contacts"),
    "users.csv": ("users", "user", "staff"),
    "user_roles.csv": ("userroles", "userrole", "roles", "role"),
    "absences.csv": ("absences", "absence", "attendance"),
}.items() for k in keys}


def meant_file(name: str) -> str | None:
    """The API file a file name is (or most likely meant to be), or None."""
    if name in FILES:
        return name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return _NEAR.get(_squash(stem))


def header_problems(found: list[str], spec: FileSpec) -> list[tuple[str, str]]:
    """(column, problem) for each way the header differs from the file's exact columns;
    the header must list every column, spelled exactly, in order (aliases accepted)."""
    expected = [c.name for c in spec.columns]
    accepted = [{c.name, *c.aliases} for c in spec.columns]
    if len(found) == len(expected) and all(f in a for f, a in zip(found, accepted,
                                                                 strict=True)):
        return []
    problems: list[tuple[str, str]] = []
    by_squash = {_squash(f): f for f in found}
    known = {n for a in accepted for n in a}
    for column, names in zip(spec.columns, accepted, strict=True):
        if names & set(found):
            continue
        near = next((by_squash[_squash(n)] for n in sorted(names) if _squash(n) in by_squash),
                    None)
        if near is not None and near not in known:
            problems.append((near, f"misnamed column: '{near}' must be spelled "
                                   f"'{column.name}' (column names are exact)"))
        else:
            problems.append((column.name, "missing column"))
    misnamed = {p[0] for p in problems}
    for name in found:
        if name not in known and name not in misnamed:
            problems.append((name, "unknown column (a misnamed column, or one this file does "
                                   "not have)"))
    for name in {f for f in found if f in known and found.count(f) > 1}:
        problems.append((name, "column appears more than once"))
    if not problems:
        problems.append(("", "columns are out of order; the order is: " + ",".join(expected)))
    return problems
