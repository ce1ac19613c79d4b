"""The OneRoster 1.1 and 1.2 CSV tables we import: columns in order, value kinds, references."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

VERSIONS = ("1.1", "1.2")
MODES = ("bulk", "delta", "absent")


@dataclass(frozen=True)
class Column:
    """One CSV column: its header name (exact case), value kind and rules.

    kind: text | enum | bool | date | datetime | year | list (comma-separated in one field).
    ref: the file whose sourcedId every value must match (for list columns: every element).
    extensible: an enumeration the binding lets a producer extend with terms that start with
    EXTENSION_PREFIX.
    """

    name: str
    kind: str = "text"
    required: bool = False
    values: tuple[str, ...] = ()
    ref: str | None = None
    extensible: bool = False

    @property
    def sql_name(self) -> str:
        return snake(self.name)


@dataclass(frozen=True)
class Table:
    """One CSV file of a version: `<name>.csv`, its columns in specification order."""

    name: str
    columns: tuple[Column, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.csv"

    @property
    def sql_name(self) -> str:
        return snake(self.name)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def extensible(table: Table, *names: str) -> Table:
    """The table with the named enumeration columns open to `ext:` terms."""
    return replace(table, columns=tuple(replace(c, extensible=True) if c.name in names else c
                                        for c in table.columns))


def snake(name: str) -> str:
    """sourcedId -> sourced_id, the database's spelling of a specification name."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# 1.2.1 binding, "Proprietary Vocabulary Terms": a proprietary term of an extensible vocabulary
# must start with these characters.
EXTENSION_PREFIX = "ext:"

_COMMON = (Column("sourcedId", required=True), Column("status"), Column("dateLastModified",
                                                                         "datetime"))

_SESSION_TYPES = ("gradingPeriod", "semester", "schoolYear", "term")
_ORG_TYPES = ("department", "school", "district", "local", "state", "national")
_USER_ROLES_11 = ("administrator", "aide", "guardian", "parent", "proctor", "relative",
                  "student", "teacher")
_ROLES_12 = ("aide", "counselor", "districtAdministrator", "guardian", "parent", "principal",
             "proctor", "relative", "siteAdministrator", "student", "systemAdministrator",
             "teacher")
# The same four in 1.2 and 1.2.1 (the binding's enrollments.csv table); 1.2 lets them be
# extended with `ext:` terms, it does not take the roles.csv vocabulary.
_ENROLLMENT_ROLES = ("administrator", "proctor", "student", "teacher")

_ACADEMIC_SESSIONS = Table("academicSessions", (
    *_COMMON,
    Column("title", required=True),
    Column("type", "enum", required=True, values=_SESSION_TYPES),
    Column("startDate", "date", required=True),
    Column("endDate", "date", required=True),
    Column("parentSourcedId", ref="academicSessions"),
    Column("schoolYear", "year", required=True),
))

_ORGS = Table("orgs", (
    *_COMMON,
    Column("name", required=True),
    Column("type", "enum", required=True, values=_ORG_TYPES),
    Column("identifier"),
    Column("parentSourcedId", ref="orgs"),
))

_COURSES = Table("courses", (
    *_COMMON,
    Column("schoolYearSourcedId", ref="academicSessions"),
    Column("title", required=True),
    Column("courseCode"),
    Column("grades", "list"),
    Column("orgSourcedId", required=True, ref="orgs"),
    Column("subjects", "list"),
    Column("subjectCodes", "list"),
))

_CLASSES = Table("classes", (
    *_COMMON,
    Column("title", required=True),
    Column("grades", "list"),
    Column("courseSourcedId", required=True, ref="courses"),
    Column("classCode"),
    Column("classType", "enum", required=True, values=("homeroom", "scheduled")),
    Column("location"),
    Column("schoolSourcedId", required=True, ref="orgs"),
    Column("termSourcedIds", "list", required=True, ref="academicSessions"),
    Column("subjects", "list"),
    Column("subjectCodes", "list"),
    Column("periods", "list"),
))

_USERS_11 = Table("users", (
    *_COMMON,
    Column("enabledUser", "bool", required=True),
    Column("orgSourcedIds", "list", required=True, ref="orgs"),
    Column("role", "enum", required=True, values=_USER_ROLES_11),
    Column("username", required=True),
    Column("userIds", "list"),
    Column("givenName", required=True),
    Column("familyName", required=True),
    Column("middleName"),
    Column("identifier"),
    Column("email"),
    Column("sms"),
    Column("phone"),
    Column("agentSourcedIds", "list", ref="users"),
    Column("grades", "list"),
    Column("password"),
))

_USERS_12_COLUMNS = (
    *_COMMON,
    Column("enabledUser", "bool", required=True),
    Column("username", required=True),
    Column("userIds", "list"),
    Column("givenName", required=True),
    Column("familyName", required=True),
    Column("middleName"),
    Column("identifier"),
    Column("email"),
    Column("sms"),
    Column("phone"),
    Column("agentSourcedIds", "list", ref="users"),
    Column("grades", "list"),
    Column("password"),
    Column("userMasterIdentifier"),
    Column("preferredGivenName"),
    Column("preferredMiddleName"),
    Column("preferredFamilyName"),
    Column("primaryOrgSourcedId", ref="orgs"),
    Column("pronouns"),
)
# 1.2.1 removed `resourceSourcedIds` (after `userMasterIdentifier`) and kept the version string
# "1.2": a 1.2 manifest's users.csv may have either layout.
_USERS_12 = Table("users", _USERS_12_COLUMNS)
_USERS_12_ORIGINAL = Table("users", (
    *_USERS_12_COLUMNS[:17], Column("resourceSourcedIds", "list"), *_USERS_12_COLUMNS[17:]))

_ROLES_TABLE_12 = Table("roles", (
    *_COMMON,
    Column("userSourcedId", required=True, ref="users"),
    Column("roleType", "enum", required=True, values=("primary", "secondary")),
    Column("role", "enum", required=True, values=_ROLES_12),
    Column("beginDate", "date"),
    Column("endDate", "date"),
    Column("orgSourcedId", required=True, ref="orgs"),
    Column("userProfileSourcedId", ref="userProfiles"),
))

_USER_PROFILES_12 = Table("userProfiles", (
    *_COMMON,
    Column("userSourcedId", required=True, ref="users"),
    Column("profileType", required=True),
    Column("vendorId", required=True),
    Column("applicationId"),
    Column("description"),
    Column("credentialType", required=True),
    Column("username", required=True),
    Column("password"),
))


def _enrollments(roles: tuple[str, ...]) -> Table:
    return Table("enrollments", (
        *_COMMON,
        Column("classSourcedId", required=True, ref="classes"),
        Column("schoolSourcedId", required=True, ref="orgs"),
        Column("userSourcedId", required=True, ref="users"),
        Column("role", "enum", required=True, values=roles),
        Column("primary", "bool"),
        Column("beginDate", "date"),
        Column("endDate", "date"),
    ))


# demographics.sourcedId "MUST be the 'sourcedId' of the User whose demographics are being
# described" (1.2.1 binding), so it is a reference as well as the key.
_RACE = ("americanIndianOrAlaskaNative", "asian", "blackOrAfricanAmerican",
         "nativeHawaiianOrOtherPacificIslander", "white", "demographicRaceTwoOrMoreRaces",
         "hispanicOrLatinoEthnicity")


def _demographics(sexes: tuple[str, ...]) -> Table:
    return Table("demographics", (
        Column("sourcedId", required=True, ref="users"),
        *_COMMON[1:],
        Column("birthDate", "date"),
        Column("sex", "enum", values=sexes),
        *(Column(name, "bool") for name in _RACE),
        Column("countryOfBirthCode"),
        Column("stateOfBirthAbbreviation"),
        Column("cityOfBirth"),
        Column("publicSchoolResidenceStatus"),
    ))


# Parents before children, so a person reading the log sees files in a sensible order.
# 1.2 marks the extensible vocabularies ("Proprietary Vocabulary Terms": classType, role in
# enrollments and roles, sex, and type in academicSessions and orgs; the others are files we do
# not import). 1.1 stays closed: its binding text was not at hand to check.
TABLES: dict[str, tuple[Table, ...]] = {
    "1.1": (_ACADEMIC_SESSIONS, _ORGS, _COURSES, _CLASSES, _USERS_11,
            _enrollments(_ENROLLMENT_ROLES), _demographics(("male", "female"))),
    "1.2": (extensible(_ACADEMIC_SESSIONS, "type"), extensible(_ORGS, "type"), _COURSES,
            extensible(_CLASSES, "classType"), _USERS_12, _USER_PROFILES_12,
            extensible(_ROLES_TABLE_12, "role"),
            extensible(_enrollments(_ENROLLMENT_ROLES), "role"),
            extensible(_demographics(("male", "female", "unspecified", "other")), "sex")),
}

# Other layouts a version accepts for a file, tried when the header does not match the first.
ALTERNATES: dict[str, dict[str, tuple[Table, ...]]] = {"1.2": {"users": (_USERS_12_ORIGINAL,)}}

# Files of the specification that we recognize in a manifest but do not import (gradebook and
# resources): their presence is reported as a warning, never silently dropped.
NOT_IMPORTED = ("categories", "classResources", "courseResources", "lineItems", "resources",
                "results", "lineItemLearningObjectiveIds", "lineItemScoreScales",
                "resultLearningObjectiveIds", "resultScoreScales", "scoreScales",
                "userResources")


def tables_for(version: str) -> dict[str, Table]:
    return {t.name: t for t in TABLES[version]}


def layouts_for(version: str, table: Table) -> tuple[Table, ...]:
    """Every accepted layout of a file, the current one first."""
    return (table, *ALTERNATES.get(version, {}).get(table.name, ()))


def all_tables() -> dict[str, tuple[Column, ...]]:
    """Each database table with the union of its columns over all versions, first seen first."""
    merged: dict[str, dict[str, Column]] = {}
    for version in VERSIONS:
        for table in (t for first in TABLES[version] for t in layouts_for(version, first)):
            cols = merged.setdefault(table.name, {})
            for col in table.columns:
                cols.setdefault(col.sql_name, col)
    return {name: tuple(cols.values()) for name, cols in merged.items()}
