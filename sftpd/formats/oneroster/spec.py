"""The OneRoster 1.1 and 1.2 CSV tables we import: columns in order, value kinds, references."""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSIONS = ("1.1", "1.2")
MODES = ("bulk", "delta", "absent")


@dataclass(frozen=True)
class Column:
    """One CSV column: its header name (exact case), value kind and rules.

    kind: text | enum | bool | date | datetime | year | list (comma-separated in one field).
    ref: the file whose sourcedId every value must match (for list columns: every element).
    """

    name: str
    kind: str = "text"
    required: bool = False
    values: tuple[str, ...] = ()
    ref: str | None = None

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


def snake(name: str) -> str:
    """sourcedId -> sourced_id, the database's spelling of a specification name."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


_COMMON = (Column("sourcedId", required=True), Column("status"), Column("dateLastModified",
                                                                         "datetime"))

_SESSION_TYPES = ("gradingPeriod", "semester", "schoolYear", "term")
_ORG_TYPES = ("department", "school", "district", "local", "state", "national")
_USER_ROLES_11 = ("administrator", "aide", "guardian", "parent", "proctor", "relative",
                  "student", "teacher")
_ROLES_12 = ("aide", "counselor", "districtAdministrator", "guardian", "parent", "principal",
             "proctor", "relative", "siteAdministrator", "student", "systemAdministrator",
             "teacher")
_ENROLLMENT_ROLES_11 = ("administrator", "proctor", "student", "teacher")
_ENROLLMENT_ROLES_12 = ("administrator", "proctor", "student", "teacher", "aide", "guardian",
                        "parent", "relative")

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

_USERS_12 = Table("users", (
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
    Column("resourceSourcedIds", "list"),
    Column("preferredGivenName"),
    Column("preferredMiddleName"),
    Column("preferredFamilyName"),
    Column("primaryOrgSourcedId", ref="orgs"),
    Column("pronouns"),
))

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
    Column("profileId", required=True),
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


_RACE = ("americanIndianOrAlaskaNative", "asian", "blackOrAfricanAmerican",
         "nativeHawaiianOrOtherPacificIslander", "white", "demographicRaceTwoOrMoreRaces",
         "hispanicOrLatinoEthnicity")


def _demographics(sexes: tuple[str, ...]) -> Table:
    return Table("demographics", (
        *_COMMON,
        Column("birthDate", "date"),
        Column("sex", "enum", values=sexes),
        *(Column(name, "bool") for name in _RACE),
        Column("countryOfBirthCode"),
        Column("stateOfBirthAbbreviation"),
        Column("cityOfBirth"),
        Column("publicSchoolResidenceStatus"),
    ))


# Parents before children, so a person reading the log sees files in a sensible order.
TABLES: dict[str, tuple[Table, ...]] = {
    "1.1": (_ACADEMIC_SESSIONS, _ORGS, _COURSES, _CLASSES, _USERS_11,
            _enrollments(_ENROLLMENT_ROLES_11), _demographics(("male", "female"))),
    "1.2": (_ACADEMIC_SESSIONS, _ORGS, _COURSES, _CLASSES, _USERS_12, _USER_PROFILES_12,
            _ROLES_TABLE_12, _enrollments(_ENROLLMENT_ROLES_12),
            _demographics(("male", "female", "unspecified", "other"))),
}

# Files of the specification that we recognize in a manifest but do not import (gradebook and
# resources): their presence is reported as a warning, never silently dropped.
NOT_IMPORTED = ("categories", "classResources", "courseResources", "lineItems", "resources",
                "results", "lineItemLearningObjectiveIds", "lineItemScoreScales",
                "resultLearningObjectiveIds", "resultScoreScales", "scoreScales",
                "userResources")


def tables_for(version: str) -> dict[str, Table]:
    return {t.name: t for t in TABLES[version]}


def all_tables() -> dict[str, tuple[Column, ...]]:
    """Each database table with the union of its columns over all versions, first seen first."""
    merged: dict[str, dict[str, Column]] = {}
    for version in VERSIONS:
        for table in TABLES[version]:
            cols = merged.setdefault(table.name, {})
            for col in table.columns:
                cols.setdefault(col.sql_name, col)
    return {name: tuple(cols.values()) for name, cols in merged.items()}
