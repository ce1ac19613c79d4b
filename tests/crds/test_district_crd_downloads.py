"""spec.downloads on a real API server: defaults, and each CEL rule refusing what it should."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.crds.test_district_crd import CRD, ED25519, create, lines_naming, merged, object_name, ok

pytestmark = pytest.mark.cluster
NAMESPACE = "test-district-crd-downloads"


@pytest.fixture(scope="module")
def api(cluster: Any) -> Iterator[Any]:
    """The cluster with the District CRD installed and this module's namespace."""
    ok(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    ok(cluster, "wait", "--for=condition=Established", "--timeout=60s",
       "crd/districts.districtsftp.io")
    ok(cluster, "create", "namespace", NAMESPACE)
    yield cluster
    ok(cluster, "delete", "namespace", NAMESPACE, "--wait=false")


def district(name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """A valid District with one key, changed by a merge patch."""
    base = {"apiVersion": "districtsftp.io/v1alpha1", "kind": "District",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"authorizedKeys": [ED25519]}}
    return merged(base, patch)  # type: ignore[no-any-return]


def get(api: Any, name: str) -> dict[str, Any]:
    out = ok(api, "get", "district", name, "-n", NAMESPACE, "-o", "json").stdout
    return json.loads(out)  # type: ignore[no-any-return]

DATABASE = {"processing": {"databaseSecretRef": {"name": "lincoln-db"}}}
DOCVIEWER = {"forms": ["IEP", "504 Plan"], "baseURL": "https://viewer.example.org/documents",
             "tokenSecretRef": {"name": "lincoln-docviewer"}}
PDFS = {"schedule": "0 4 * * 6", "forms": ["IEP"]}


def downloads(**blocks: Any) -> dict[str, Any]:
    """A merge patch giving the District a database and these spec.downloads blocks."""
    return {"spec": {**DATABASE, "downloads": blocks}}


def test_the_defaults_are_stored(api: Any) -> None:
    ok(api, "create", "--validate=strict", "-f", "-", input=json.dumps(district(
        "dl-defaults", downloads(docviewer=DOCVIEWER, pdfs=PDFS, directories=["state-ids"]))))
    stored = get(api, "dl-defaults")["spec"]["downloads"]
    assert stored == {
        "docviewer": {**DOCVIEWER, "enabled": True, "schedule": "30 1 * * *",
                      "tokenSecretRef": {"name": "lincoln-docviewer", "key": "key"},
                      "tokenTTL": "7d", "keep": 7},
        "pdfs": {**PDFS, "enabled": True, "keepDays": 2},
        "directories": ["state-ids"]}


INVALID = [
    pytest.param({"spec": {"downloads": {"docviewer": DOCVIEWER}}}, "spec.downloads",
                 "read the documents from the district's database: set "
                 "spec.processing.databaseSecretRef", id="docviewer-without-database"),
    pytest.param({"spec": {"downloads": {"pdfs": PDFS}}}, "spec.downloads",
                 "spec.processing.databaseSecretRef", id="pdfs-without-database"),
    pytest.param(downloads(docviewer={"forms": ["IEP"], "baseURL": "https://v.example/d"}),
                 "spec.downloads.docviewer.tokenSecretRef",
                 "the docviewer export needs tokenSecretRef (or enabled false)",
                 id="docviewer-without-token-secret"),
    pytest.param(downloads(docviewer={"forms": ["IEP"], "tokenSecretRef": {"name": "t"}}),
                 "spec.downloads.docviewer.baseURL",
                 "the docviewer export needs baseURL (or enabled false)",
                 id="docviewer-without-base-url"),
    pytest.param(downloads(docviewer={"baseURL": "https://v.example/d",
                                      "tokenSecretRef": {"name": "t"}}),
                 "spec.downloads.docviewer.forms",
                 "the docviewer export needs forms (or enabled false)",
                 id="docviewer-without-forms"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "forms": []}),
                 "spec.downloads.docviewer.forms", "should have at least 1 items",
                 id="docviewer-no-forms"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "forms": ["IEP,504 Plan"]}),
                 "spec.downloads.docviewer.forms[0]",
                 "a form name is matched exactly, so it may not hold a comma",
                 id="form-with-comma"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "forms": ["IEP "]}),
                 "spec.downloads.docviewer.forms[0]", "nor start or end with a space",
                 id="form-trailing-space"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "forms": ["IEP\n504"]}),
                 "spec.downloads.docviewer.forms[0]", "a line break", id="form-line-break"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "forms": ["IEP", "IEP"]}),
                 "spec.downloads.docviewer.forms[1]", 'Duplicate value: "IEP"',
                 id="form-twice"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "baseURL": "ftp://viewer.example.org/d"}),
                 "spec.downloads.docviewer.baseURL",
                 "baseURL is not an http(s) URL with a host",
                 id="base-url-ftp"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "baseURL": "viewer.example.org/d"}),
                 "spec.downloads.docviewer.baseURL", "is not an http(s) URL with a host",
                 id="base-url-relative"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "baseURL": "https:///documents"}),
                 "spec.downloads.docviewer.baseURL", "is not an http(s) URL with a host",
                 id="base-url-no-host"),
    pytest.param(downloads(docviewer={**DOCVIEWER,
                                      "baseURL": "https://viewer.example.org/d#top"}),
                 "spec.downloads.docviewer.baseURL", "may not hold a fragment",
                 id="base-url-fragment"),
    pytest.param(downloads(docviewer={**DOCVIEWER,
                                      "baseURL": "https://viewer.example.org/a b"}),
                 "spec.downloads.docviewer.baseURL", "spaces or control characters",
                 id="base-url-space"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "tokenSecretRef": {"name": "Bad_Name"}}),
                 "spec.downloads.docviewer.tokenSecretRef.name",
                 '"Bad_Name" is not a valid Secret name', id="token-secret-bad-name"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "tokenSecretRef": {"name": "t",
                                                                      "key": "a/b"}}),
                 "spec.downloads.docviewer.tokenSecretRef.key",
                 '"a/b" is not a valid Secret key', id="token-secret-bad-key"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "tokenTTL": "7 days"}),
                 "spec.downloads.docviewer.tokenTTL",
                 "tokenTTL is not a duration: write a number above 0 and a unit",
                 id="ttl-words"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "tokenTTL": "0d"}),
                 "spec.downloads.docviewer.tokenTTL", 'tokenTTL is not a duration',
                 id="ttl-zero"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "keep": 0}),
                 "spec.downloads.docviewer.keep", "should be greater than or equal to 1",
                 id="keep-zero"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "schedule": "30 25 * * *"}),
                 "spec.downloads.docviewer.schedule", "has a field out of range",
                 id="docviewer-schedule-hour-25"),
    pytest.param(downloads(pdfs={"forms": ["IEP"]}), "spec.downloads.pdfs.schedule",
                 "the PDF extraction needs schedule (or enabled false)",
                 id="pdfs-without-schedule"),
    pytest.param(downloads(pdfs={"schedule": "0 4 * * 6"}), "spec.downloads.pdfs.forms",
                 "the PDF extraction needs forms (or enabled false)",
                 id="pdfs-without-forms"),
    pytest.param(downloads(pdfs={**PDFS, "schedule": "weekly"}),
                 "spec.downloads.pdfs.schedule", 'schedule "weekly" is not a cron schedule',
                 id="pdfs-schedule-words"),
    pytest.param(downloads(pdfs={**PDFS, "students": ["S1", "../etc"]}),
                 "spec.downloads.pdfs.students[1]",
                 "a student id names a folder: use letters, digits", id="student-path"),
    pytest.param(downloads(pdfs={**PDFS, "students": ["S" * 65]}),
                 "spec.downloads.pdfs.students[0]", "may not be more than 64",
                 id="student-too-long"),
    pytest.param(downloads(pdfs={**PDFS, "students": [f"S{n}" for n in range(1001)]}),
                 "spec.downloads.pdfs.students", "must have at most 1000 items",
                 id="students-too-many"),
    pytest.param(downloads(pdfs={**PDFS, "keepDays": 366}), "spec.downloads.pdfs.keepDays",
                 "should be less than or equal to 365", id="keep-days-over-a-year"),
    pytest.param(downloads(directories=["state/ids"]), "spec.downloads.directories[0]",
                 "a directory name is one path component of lowercase letters",
                 id="directory-two-components"),
    pytest.param(downloads(directories=[".."]), "spec.downloads.directories[0]",
                 "one path component", id="directory-dot-dot"),
    pytest.param(downloads(directories=["State"]), "spec.downloads.directories[0]",
                 "lowercase letters, digits, - and _", id="directory-uppercase"),
    pytest.param(downloads(directories=["-x"]), "spec.downloads.directories[0]",
                 "starting with a letter or digit", id="directory-leading-hyphen"),
    pytest.param(downloads(directories=["d" * 64]), "spec.downloads.directories[0]",
                 "may not be more than 63", id="directory-too-long"),
    pytest.param(downloads(directories=["pdfs"]), "spec.downloads.directories[0]",
                 "backups, docviewer and pdfs under /downloads/ are the product's own",
                 id="directory-pdfs"),
    pytest.param(downloads(directories=["backups"]), "spec.downloads.directories[0]",
                 "are the product's own", id="directory-backups"),
    pytest.param(downloads(directories=["docviewer"]), "spec.downloads.directories[0]",
                 "are the product's own", id="directory-docviewer"),
    pytest.param(downloads(directories=["a", "a"]), "spec.downloads.directories[1]",
                 'Duplicate value: "a"', id="directory-twice"),
    pytest.param(downloads(directories=[f"d{n}" for n in range(17)]),
                 "spec.downloads.directories", "must have at most 16 items",
                 id="directories-too-many"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "colour": "blue"}), "",
                 'unknown field "spec.downloads.docviewer.colour"', id="unknown-field"),
]


@pytest.mark.parametrize(("patch", "field", "message"), INVALID)
def test_an_invalid_downloads_spec_is_refused_with_a_clear_message(
        api: Any, request: pytest.FixtureRequest, patch: dict[str, Any],
        field: str, message: str) -> None:
    obj = district(object_name("dl", request), patch)
    result = create(api, obj)
    assert result.returncode != 0, f"the API server accepted {obj}"
    assert any(message in line for line in lines_naming(field, result.stderr)), result.stderr


VALID = [
    pytest.param(downloads(docviewer={"enabled": False}, pdfs={"enabled": False}),
                 id="disabled-without-settings-or-database"),
    pytest.param({"spec": {"downloads": {"docviewer": {"enabled": False},
                                         "directories": ["state-ids", "sif_2"]}}},
                 id="directories-need-no-database"),
    pytest.param(downloads(docviewer={**DOCVIEWER, "tokenTTL": "36h", "keep": 365,
                                      "baseURL": "http://viewer.example.org:8080/d?x=1&y=2",
                                      "forms": ["IEP", "504 Plan", "Progress Report"]}),
                 id="docviewer-query-port-and-bounds"),
    pytest.param(downloads(pdfs={**PDFS, "students": ["S1", "0042", "a.b_c-d"],
                                 "keepDays": 365}), id="pdfs-students"),
]


@pytest.mark.parametrize("patch", VALID)
def test_a_valid_downloads_spec_is_accepted(api: Any, request: pytest.FixtureRequest,
                                            patch: dict[str, Any]) -> None:
    result = create(api, district(object_name("dl-ok", request), patch), "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_the_database_cannot_be_removed_while_downloads_need_it(api: Any) -> None:
    ok(api, "create", "-f", "-", input=json.dumps(district("dl-keep-db",
                                                            downloads(pdfs=PDFS))))
    refused = api.kubectl("patch", "district", "dl-keep-db", "-n", NAMESPACE, "--type=merge",
                          "-p", json.dumps({"spec": {"processing": {"databaseSecretRef": None}}}),
                          check=False)
    assert refused.returncode != 0
    assert "set spec.processing.databaseSecretRef" in refused.stderr
