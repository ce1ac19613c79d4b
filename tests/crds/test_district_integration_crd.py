"""spec.integration on a real API server: each CEL rule and bound refuses with its message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.crds.test_district_crd import CRD, ED25519, create, lines_naming, merged, ok

pytestmark = pytest.mark.cluster
NAMESPACE = "test-district-integration"
ZONE = "https://zis.lincoln.k12.example/zis/lincoln"
SIF = {"zoneURL": ZONE, "sourceId": "SameGoal_Lincoln", "authSecretRef": {"name": "zone-auth"}}


@pytest.fixture(scope="module")
def api(cluster: Any) -> Iterator[Any]:
    ok(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    ok(cluster, "wait", "--for=condition=Established", "--timeout=60s",
       "crd/districts.districtsftp.io")
    ok(cluster, "create", "namespace", NAMESPACE)
    yield cluster
    ok(cluster, "delete", "namespace", NAMESPACE, "--wait=false")


def pulling(name: str, sif: dict[str, Any] | None = None,
            integration: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid pulling District, its sif and integration changed by merge patches."""
    base = {"apiVersion": "districtsftp.io/v1alpha1", "kind": "District",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"authorizedKeys": [ED25519],
                     "integration": {"mode": "pull", "sif": merged(SIF, sif or {})}}}
    if integration is not None:
        base["spec"]["integration"] = merged(base["spec"]["integration"], integration)
    return base


def name_of(request: pytest.FixtureRequest, prefix: str) -> str:
    return f"{prefix}-{request.node.callspec.id}"[:40].rstrip("-")


INVALID = [
    pytest.param({}, {"sif": None}, "spec.integration.sif",
                 "integration.mode pull needs integration.sif", id="pull-without-sif"),
    pytest.param({}, {"mode": "push"}, "spec.integration.sif",
                 "integration.sif is used only with integration.mode pull", id="sif-with-push"),
    pytest.param({}, {"mode": None}, "spec.integration.sif",
                 "integration.sif is used only with integration.mode pull",
                 id="sif-with-default-mode"),
    pytest.param({}, {"mode": "poll"}, "spec.integration.mode",
                 'Unsupported value: "poll": supported values: "push", "pull"',
                 id="mode-unknown"),
    pytest.param({"zoneURL": "http://zis.lincoln.k12.example/zis"}, None,
                 "spec.integration.sif.zoneURL",
                 'sif.zoneURL "http://zis.lincoln.k12.example/zis" is not an https URL with a '
                 "host", id="zone-plain-http"),
    pytest.param({"zoneURL": "zis.lincoln.k12.example/zis"}, None,
                 "spec.integration.sif.zoneURL", "is not an https URL with a host",
                 id="zone-without-scheme"),
    pytest.param({"zoneURL": "https:///zis/lincoln"}, None, "spec.integration.sif.zoneURL",
                 "is not an https URL with a host", id="zone-without-host"),
    pytest.param({"zoneURL": "https://zis.lincoln.k12.example:70000/zis"}, None,
                 "spec.integration.sif.zoneURL",
                 "the port a number from 1 to 65535", id="zone-port-too-big"),
    pytest.param({"zoneURL": "https://zis.lincoln.k12.example:0/zis"}, None,
                 "spec.integration.sif.zoneURL", "the port a number from 1 to 65535",
                 id="zone-port-zero"),
    pytest.param({"zoneURL": "https://[zis.lincoln]/zis"}, None,
                 "spec.integration.sif.zoneURL", "an IPv6 address in [brackets]",
                 id="zone-brackets-without-address"),
    pytest.param({"zoneURL": "https://agent:secret@zis.lincoln.k12.example/zis"}, None,
                 "spec.integration.sif.zoneURL",
                 "sif.zoneURL must not hold credentials (user:password@)",
                 id="zone-with-credentials"),
    pytest.param({"zoneURL": "https://zis.example/" + "z" * 2048}, None,
                 "spec.integration.sif.zoneURL", "may not be more than 2048",
                 id="zone-too-long"),
    pytest.param({"sourceId": "SameGoal Lincoln"}, None, "spec.integration.sif.sourceId",
                 'sif.sourceId "SameGoal Lincoln" is not a valid SIF_SourceID',
                 id="source-id-with-space"),
    pytest.param({"sourceId": "-lincoln"}, None, "spec.integration.sif.sourceId",
                 "starting with a letter or digit", id="source-id-leading-hyphen"),
    pytest.param({"sourceId": ""}, None, "spec.integration.sif.sourceId",
                 "should be at least 1 chars long", id="source-id-empty"),
    pytest.param({"sourceId": "s" * 65}, None, "spec.integration.sif.sourceId",
                 "may not be more than 64", id="source-id-too-long"),
    pytest.param({"sourceId": None}, None, "spec.integration.sif.sourceId", "Required value",
                 id="source-id-missing"),
    pytest.param({"zoneURL": None}, None, "spec.integration.sif.zoneURL", "Required value",
                 id="zone-missing"),
    pytest.param({"authSecretRef": None}, None, "spec.integration.sif.authSecretRef",
                 "Required value", id="auth-secret-missing"),
    pytest.param({"authSecretRef": {"name": "Zone_Auth"}}, None,
                 "spec.integration.sif.authSecretRef.name",
                 '"Zone_Auth" is not a valid Secret name', id="auth-secret-bad-name"),
    pytest.param({"caSecretRef": {"name": "zone-ca", "key": "ca/crt"}}, None,
                 "spec.integration.sif.caSecretRef.key", '"ca/crt" is not a valid Secret key',
                 id="ca-secret-bad-key"),
    pytest.param({"objects": ["StudentPicture"]}, None, "spec.integration.sif.objects[0]",
                 'Unsupported value: "StudentPicture": supported values: "StudentPersonal"',
                 id="object-unknown"),
    pytest.param({"objects": ["SchoolInfo", "SchoolInfo"]}, None,
                 "spec.integration.sif.objects[1]", 'Duplicate value: "SchoolInfo"',
                 id="object-twice"),
    pytest.param({"objects": []}, None, "spec.integration.sif.objects",
                 "should have at least 1 items", id="objects-empty"),
    pytest.param({"maxBufferSize": 4095}, None, "spec.integration.sif.maxBufferSize",
                 "should be greater than or equal to 4096", id="buffer-too-small"),
    pytest.param({"maxBufferSize": 100000001}, None, "spec.integration.sif.maxBufferSize",
                 "should be less than or equal to 100000000", id="buffer-too-big"),
    pytest.param({"objects": ["StudentPersonal", "SchoolInfo"]}, None,
                 "spec.integration.sif.objects",
                 "StudentPersonal needs StudentSchoolEnrollment and SchoolInfo too",
                 id="students-without-enrollments"),
    pytest.param({"schedule": "every night"}, None, "spec.integration.sif.schedule",
                 'schedule "every night" is not a cron schedule', id="schedule-words"),
    pytest.param({"zoneUrl": ZONE}, None, "", 'unknown field "spec.integration.sif.zoneUrl"',
                 id="zone-url-misspelt"),
]


@pytest.mark.parametrize(("sif", "integration", "field", "message"), INVALID)
def test_a_bad_integration_is_refused_with_a_clear_message(
        api: Any, request: pytest.FixtureRequest, sif: dict[str, Any],
        integration: dict[str, Any] | None, field: str, message: str) -> None:
    obj = pulling(name_of(request, "bad"), sif, integration)
    result = create(api, obj)
    assert result.returncode != 0, f"the API server accepted {obj}"
    assert any(message in line for line in lines_naming(field, result.stderr)), result.stderr


VALID = [
    pytest.param({}, id="minimal"),
    pytest.param({"zoneURL": "https://203.0.113.9:8443/zis/lincoln"}, id="address-and-port"),
    pytest.param({"zoneURL": "https://[2001:db8::9]:65535/zis"}, id="ipv6-highest-port"),
    pytest.param({"zoneURL": "https://zis.example:1"}, id="lowest-port-no-path"),
    pytest.param({"zoneURL": "HTTPS://ZIS.Lincoln.k12.example/zis?zone=lincoln"},
                 id="upper-case-scheme-and-query"),
    pytest.param({"sourceId": "s" * 64, "objects": ["SchoolInfo"],
                  "maxBufferSize": 4096, "schedule": "@daily",
                  "caSecretRef": {"name": "zone-ca"}}, id="bounds-low"),
    pytest.param({"maxBufferSize": 100000000, "objects": ["StaffPersonal", "StudentContact"]},
                 id="bounds-high-and-older-contact-object"),
]


@pytest.mark.parametrize("sif", VALID)
def test_a_good_integration_is_accepted(api: Any, request: pytest.FixtureRequest,
                                        sif: dict[str, Any]) -> None:
    result = create(api, pulling(name_of(request, "ok"), sif), "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_defaults_are_stored_and_pull_can_go_back_to_push(api: Any) -> None:
    ok(api, "create", "-f", "-", input=json.dumps(pulling("defaults")))
    stored = json.loads(ok(api, "get", "district", "defaults", "-n", NAMESPACE,
                           "-o", "json").stdout)
    sif = stored["spec"]["integration"]["sif"]
    assert sif["schedule"] == "0 4 * * *"
    assert sif["maxBufferSize"] == 10000000
    assert sif["objects"] == ["StudentPersonal", "SchoolInfo",
                              "StudentSchoolEnrollment", "StudentContactPersonal",
                              "StudentContactRelationship"]
    # Back to push: mode and sif change together; mode alone is refused.
    half = api.kubectl("patch", "district", "defaults", "-n", NAMESPACE, "--type=merge",
                       "-p", json.dumps({"spec": {"integration": {"mode": "push"}}}),
                       check=False)
    assert half.returncode != 0 and "used only with integration.mode pull" in half.stderr
    ok(api, "patch", "district", "defaults", "-n", NAMESPACE, "--type=merge", "-p",
       json.dumps({"spec": {"integration": {"mode": "push", "sif": None}}}))
    # A District that never mentions integration is push.
    ok(api, "create", "-f", "-", input=json.dumps({
        "apiVersion": "districtsftp.io/v1alpha1", "kind": "District",
        "metadata": {"name": "plain", "namespace": NAMESPACE},
        "spec": {"authorizedKeys": [ED25519]}}))
    plain = json.loads(ok(api, "get", "district", "plain", "-n", NAMESPACE, "-o",
                          "json").stdout)
    assert plain["spec"]["integration"] == {"mode": "push"}
