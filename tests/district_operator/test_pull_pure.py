"""The SIF pull, pure: the integration, the pull CronJob and egress policy, its status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from district_contract import layout, results
from district_contract.results import Outcome, PullResult
from district_operator import builders, names, status
from district_operator.conditions import Reason
from district_operator.model import InvalidDistrictError, parse_district

from tests.district_operator.builders.test_builders import INPUTS, OWNER, district_body
from tests.district_operator.test_status import conditions, healthy

NOW = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
ZONE = "https://zis.lincoln.k12.example/zis/lincoln"
SIF = {"zoneURL": ZONE, "sourceId": "SameGoal_Lincoln", "authSecretRef": {"name": "zone-auth"}}


def district(**spec: Any):  # type: ignore[no-untyped-def]
    return parse_district(district_body(**spec))


def pulling(**sif: Any):  # type: ignore[no-untyped-def]
    return district(integration={"mode": "pull", "sif": {**SIF, **sif}})


def pull_cronjob(d: Any) -> dict[str, Any]:
    return builders.cronjobs(d, INPUTS)[names.JOB_PULL]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_push_is_the_default_and_adds_nothing() -> None:
    for d in (district(), district(integration={"mode": "push"})):
        assert d.integration.pull is None
        kinds = [(c["kind"], c["metadata"]["name"])
                 for c in builders.desired_children(d, INPUTS, "")]
        assert ("CronJob", "lincoln-pull") not in kinds
        assert ("NetworkPolicy", "lincoln-pull-egress") not in kinds


def test_pull_without_sif_is_refused_by_the_model_too() -> None:
    with pytest.raises(InvalidDistrictError, match=r"needs spec\.integration\.sif"):
        district(integration={"mode": "pull"})


def test_pull_cronjob_runs_sif_pull_restricted_tokenless_beside_the_server() -> None:
    d = pulling(caSecretRef={"name": "zone-ca"}, objects=["StudentPersonal", "SchoolInfo"],
                maxBufferSize=65536, schedule="30 5 * * *")
    children = builders.desired_children(d, INPUTS, "")
    assert [(c["kind"], c["metadata"]["name"]) for c in children][-2:] == [
        ("CronJob", "lincoln-pull"), ("NetworkPolicy", "lincoln-pull-egress")]
    cron = pull_cronjob(d)
    assert cron["metadata"]["ownerReferences"] == [OWNER]
    spec = cron["spec"]
    assert spec["schedule"] == "30 5 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]
    assert pod["metadata"]["labels"][names.LABEL_COMPONENT] == "pull"
    pod_spec = pod["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        0]["labelSelector"]["matchLabels"] == names.server_selector("lincoln")
    (container,) = pod_spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["args"] == ["sif-pull", "--root", layout.DATA_MOUNT,
                                 "--result-file", layout.TERMINATION_LOG]
    assert env_of(container) == {
        "SFTPD_ROOT": layout.DATA_MOUNT, "SFTPD_ZONE_URL": ZONE,
        "SFTPD_SOURCE_ID": "SameGoal_Lincoln", "SFTPD_OBJECTS": "StudentPersonal,SchoolInfo",
        "SFTPD_MAX_BUFFER_SIZE": "65536", "SFTPD_AUTH_DIR": layout.SIF_AUTH_DIR,
        "SFTPD_CA_FILE": f"{layout.SIF_CA_DIR}/{layout.SIF_CA_FILE}"}
    assert not any("valueFrom" in e for e in container["env"])  # no database for a pull
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["sif-auth"]["secret"] == {"secretName": "zone-auth", "defaultMode": 0o400}
    assert volumes["sif-ca"]["secret"] == {"secretName": "zone-ca", "defaultMode": 0o400,
                                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "lincoln-data"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["sif-auth"] == {"name": "sif-auth", "mountPath": layout.SIF_AUTH_DIR,
                                  "readOnly": True}
    assert mounts["sif-ca"] == {"name": "sif-ca", "mountPath": layout.SIF_CA_DIR,
                                "readOnly": True}
    # The district's tree is writable: the pull publishes its epoch into /upload.
    assert mounts["data"] == {"name": "data", "mountPath": layout.DATA_MOUNT}


def test_pull_defaults_and_no_ca_means_no_ca_file() -> None:
    cron = pull_cronjob(pulling())
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert cron["spec"]["schedule"] == "0 4 * * *"
    assert env["SFTPD_OBJECTS"] == ("StudentPersonal,SchoolInfo,"
                                    "StudentSchoolEnrollment,StudentContactPersonal,"
                                    "StudentContactRelationship")
    assert env["SFTPD_MAX_BUFFER_SIZE"] == "10000000"
    assert "SFTPD_CA_FILE" not in env
    assert "sif-ca" not in {m["name"] for m in container["volumeMounts"]}


def test_a_suspended_district_pauses_the_pull() -> None:
    d = parse_district(district_body(suspend=True,
                                     integration={"mode": "pull", "sif": SIF}))
    assert pull_cronjob(d)["spec"]["suspend"] is True


def egress(d: Any) -> dict[str, Any]:
    policy = builders.pull_network_policy(d)
    assert policy is not None
    assert policy["metadata"]["ownerReferences"] == [OWNER]
    assert policy["spec"]["podSelector"] == {"matchLabels": names.job_selector("lincoln",
                                                                               "pull")}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == []
    return policy


DNS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


@pytest.mark.parametrize(("url", "zone_rule"), [
    pytest.param("https://203.0.113.9:8443/zis/lincoln",
                 {"to": [{"ipBlock": {"cidr": "203.0.113.9/32"}}],
                  "ports": [{"protocol": "TCP", "port": 8443}]}, id="ipv4-with-port"),
    pytest.param("https://[2001:db8::9]/zis",
                 {"to": [{"ipBlock": {"cidr": "2001:db8::9/128"}}],
                  "ports": [{"protocol": "TCP", "port": 443}]}, id="ipv6-default-port"),
    pytest.param(ZONE, {"ports": [{"protocol": "TCP", "port": 443}]}, id="name-any-address"),
])
def test_egress_goes_to_the_zone_and_dns_only(url: str, zone_rule: dict[str, Any]) -> None:
    policy = egress(pulling(zoneURL=url))
    assert policy["spec"]["egress"] == [zone_rule, DNS]


def test_the_pull_pods_only_are_selected_not_the_server() -> None:
    d = pulling()
    selector = egress(d)["spec"]["podSelector"]["matchLabels"]
    server_pod = builders.deployment(d, INPUTS)["spec"]["template"]["metadata"]["labels"]
    pull_pod = pull_cronjob(d)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pull_pod.items()
    assert not selector.items() <= server_pod.items()


# ---- status ------------------------------------------------------------------------------

def conditions_for(d: Any, observed: status.Observed | None = None,
                   previous: dict[str, Any] | None = None) -> dict[str, tuple[str, str]]:
    return conditions(status.compute_status(d, observed or healthy(), previous or {}, NOW))


def test_pull_healthy_is_not_configured_in_push_and_waits_for_a_run_in_pull() -> None:
    assert conditions_for(district(processing={"formats": []}))["PullHealthy"] == (
        "True", "NotConfigured")
    pull = parse_district(district_body(processing={"formats": []},
                                        integration={"mode": "pull", "sif": SIF}))
    got = conditions_for(pull)
    assert got["PullHealthy"] == ("Unknown", "NoRunYet")
    assert got["Ready"] == ("True", "Ready")


def test_a_missing_zone_secret_makes_the_pull_unhealthy_and_the_district_not_ready() -> None:
    pull = parse_district(district_body(processing={"formats": []},
                                        integration={"mode": "pull", "sif": SIF}))
    observed = healthy()
    observed.pull_secrets = status.SecretProblem(Reason.SIF_AUTH_SECRET_NOT_FOUND,
                                                 "Secret zone-auth does not exist")
    got = conditions_for(pull, observed)
    assert got["PullHealthy"] == ("False", "SifAuthSecretNotFound")
    assert got["Ready"] == ("False", "PullNotReady")


def pull_report(message: str | None, succeeded: bool = False) -> status.JobReport:
    return status.parse_termination_message("pull", message, succeeded, "container ended")


def test_a_pull_result_fills_last_pull_and_pull_healthy() -> None:
    wire = results.encode(PullResult(
        outcome=Outcome.SUCCEEDED, message="pulled 3 objects into epoch 20261128-040012",
        epoch="20261128-040012", zone_url=ZONE, objects=("StudentPersonal=412", "SchoolInfo=5"),
        messages=7, packets=9, completed_at="2026-11-28T04:00:12Z"))
    st = status.apply_job_report({}, pull_report(wire, True), "lincoln-pull-1", 2, NOW)
    assert st["lastPull"] == {
        "outcome": "Succeeded", "reason": "",
        "message": "pulled 3 objects into epoch 20261128-040012",
        "epoch": "20261128-040012", "objects": ["StudentPersonal=412", "SchoolInfo=5"],
        "messages": 7, "packets": 9, "completedAt": "2026-11-28T04:00:12Z"}
    assert conditions(st)["PullHealthy"] == ("True", "PullSucceeded")
    # An older pull recorded late leaves the newer one shown.
    older = results.encode(PullResult(outcome=Outcome.FAILED, message="zone down",
                                      reason="ZoneUnreachable",
                                      completed_at="2026-11-28T03:00:00Z"))
    after = status.apply_job_report(st, pull_report(older), "lincoln-pull-0", 2, NOW)
    assert after["lastPull"] == st["lastPull"]


def test_a_failed_pull_says_why_in_last_pull_and_the_condition() -> None:
    wire = results.encode(PullResult(
        outcome=Outcome.FAILED, reason="ZoneAccessDenied",
        message="the zone answered SIF_Error category 4 code 3: access denied",
        zone_url=ZONE, completed_at="2026-11-28T04:00:40Z"))
    st = status.apply_job_report({}, pull_report(wire), "lincoln-pull-2", 2, NOW)
    assert st["lastPull"] == {
        "outcome": "Failed", "reason": "ZoneAccessDenied",
        "message": "the zone answered SIF_Error category 4 code 3: access denied", "epoch": "",
        "messages": 0, "packets": 0, "objects": [], "completedAt": "2026-11-28T04:00:40Z"}
    pull = next(c for c in st["conditions"] if c["type"] == "PullHealthy")
    assert (pull["status"], pull["reason"]) == ("False", "PullFailed")
    assert pull["message"] == ("job lincoln-pull-2: the zone answered SIF_Error category 4 "
                               "code 3: access denied (ZoneAccessDenied)")
    # Kept across reconciles until the next pull says otherwise, and Ready follows.
    d = parse_district(district_body(processing={"formats": []},
                                     integration={"mode": "pull", "sif": SIF}))
    recomputed = status.compute_status(d, healthy(), st, NOW + timedelta(minutes=1))
    assert conditions(recomputed)["PullHealthy"] == ("False", "PullFailed")
    assert conditions(recomputed)["Ready"] == ("False", "PullNotReady")


def test_a_pull_pod_that_died_without_a_result_still_lands_in_status() -> None:
    st = status.apply_job_report({}, pull_report("Traceback...\nMemoryError"), "lincoln-pull-3",
                                 2, NOW)
    assert st["lastPull"] == {"outcome": "Failed", "reason": "", "message": "MemoryError",
                              "epoch": "", "objects": [], "messages": 0, "packets": 0,
                              "completedAt": "2026-11-28T04:00:00Z"}
    assert conditions(st)["PullHealthy"] == ("False", "PullFailed")
    # Another job's result in a pull's termination message is not taken as the pull's.
    wrong = results.encode(results.BackupResult(outcome=Outcome.SUCCEEDED))
    assert json.loads(wrong)["kind"] == "backup"
    assert pull_report(wrong, True).result is None
