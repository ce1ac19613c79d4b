"""The SIF pull on the real control plane: its CronJob and egress policy, Secrets, results.

One `district-operator run` process serves the module (its own namespace). As in
test_operator.py no kubelet runs: a pull Job's pod is ended through the pod status subresource
with the termination message `sftpd sif-pull` writes, and the real job controller decides.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from district_contract import layout, results
from district_contract.results import Outcome, PullResult
from district_operator import api, builders, drift, names
from district_operator.model import parse_district

from tests.district_operator.conftest import (
    RESYNC_SECONDS,
    TEST_IMAGE,
    OperatorProcess,
    apply_yaml,
    condition,
    district_manifest,
    make_namespace,
    settled,
    wait_for,
)
from tests.district_operator.test_notifications import Hook

pytestmark = pytest.mark.cluster
NS = "operator-pull"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
       " it@polk.k12.example")
ZONE = "https://zis.polk.k12.example/zis/polk"


@pytest.fixture(scope="module")
def namespace(crd: Any) -> Iterator[str]:
    make_namespace(crd, NS)
    # The API server's Pod Security admission refuses any pod of this namespace that is not
    # "restricted": the pull's pods, made by the real job controller, must pass it.
    crd.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    yield NS
    crd.kubectl("delete", "namespace", NS, "--wait=false")


@pytest.fixture(scope="module")
def operator(namespace: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    process = OperatorProcess(namespace, tmp_path_factory.mktemp("operator") / "operator.log")
    yield process
    process.stop()


def secret(crd: Any, name: str, **data: str) -> None:
    apply_yaml(crd, {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": name, "namespace": NS}, "stringData": data})


def pull_district(crd: Any, name: str, **sif: Any) -> None:
    apply_yaml(crd, district_manifest(
        name, NS, authorizedKeys=[KEY], processing={"formats": []},
        integration={"mode": "pull", "sif": {
            "zoneURL": ZONE, "sourceId": f"SameGoal_{name}",
            "authSecretRef": {"name": f"{name}-zone"}, **sif}}))


def wait_pull_condition(kube: api.Kube, name: str, status: str, reason: str,
                        timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = settled(kube, NS, name)
        if body is None:
            return None
        pull = condition(body, "PullHealthy")
        return body if (pull["status"], pull["reason"]) == (status, reason) else None
    return wait_for(check, timeout=timeout,  # type: ignore[no-any-return]
                    what=f"{name}: PullHealthy={status} ({reason})")


def test_pull_adds_its_cronjob_and_egress_policy_as_built(crd: Any, kube: api.Kube,
                                                          operator: OperatorProcess) -> None:
    secret(crd, "polk-zone", username="SameGoal_polk", password="pw")
    secret(crd, "polk-ca", **{"ca.crt": "-----BEGIN CERTIFICATE-----\n..."})
    pull_district(crd, "polk", zoneURL="https://203.0.113.9:8443/zis/polk",
                  caSecretRef={"name": "polk-ca"},
                  objects=["StudentPersonal", "StudentSchoolEnrollment", "SchoolInfo"])
    body = wait_pull_condition(kube, "polk", "Unknown", "NoRunYet")
    district = parse_district(body)
    inputs = builders.BuildInputs(image=TEST_IMAGE)
    expected = {(m["kind"], m["metadata"]["name"]): m
                for m in builders.desired_children(district, inputs, KEY + "\n")}
    cron_manifest = expected[("CronJob", "polk-pull")]
    policy_manifest = expected[("NetworkPolicy", "polk-pull-egress")]
    for manifest in (cron_manifest, policy_manifest):
        live = kube.get(manifest["kind"], NS, manifest["metadata"]["name"])
        assert live is not None, manifest["metadata"]["name"]
        # Every field the builder sets is live as built (the server adds only defaults).
        assert drift.contains(manifest, live), manifest["metadata"]["name"]

    cron = kube.get("CronJob", NS, "polk-pull")
    assert cron is not None
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "labelSelector"]["matchLabels"] == names.server_selector("polk")
    (container,) = pod["containers"]
    assert container["args"][0] == "sif-pull"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SFTPD_ZONE_URL"] == "https://203.0.113.9:8443/zis/polk"
    assert env["SFTPD_OBJECTS"] == "StudentPersonal,StudentSchoolEnrollment,SchoolInfo"
    assert env["SFTPD_CA_FILE"] == f"{layout.SIF_CA_DIR}/ca.crt"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[layout.SIF_AUTH_DIR]["readOnly"] is True
    assert mounts[layout.SIF_CA_DIR]["readOnly"] is True
    assert "readOnly" not in mounts[layout.DATA_MOUNT]  # the pull writes its epoch to /upload

    policy = kube.get("NetworkPolicy", NS, "polk-pull-egress")
    assert policy is not None
    assert policy["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "203.0.113.9/32"}}],
         "ports": [{"protocol": "TCP", "port": 8443}]},
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"].items()
    assert condition(body, "Ready")["reason"] != "PullNotReady"


def test_the_zone_secrets_are_checked_on_each_reconcile(crd: Any, kube: api.Kube,
                                                       operator: OperatorProcess) -> None:
    pull_district(crd, "hayes", caSecretRef={"name": "hayes-ca"})
    body = wait_pull_condition(kube, "hayes", "False", "SifAuthSecretNotFound")
    assert "Secret hayes-zone" in condition(body, "PullHealthy")["message"]
    # Ready waits for the volume and server here too; the pull is among the problems named.
    assert "PullHealthy: Secret hayes-zone" in condition(body, "Ready")["message"]
    # Neither pair of keys: picked up by the resync, no District change needed.
    secret(crd, "hayes-zone", username="SameGoal_hayes", token="t")
    body = wait_pull_condition(kube, "hayes", "False", "SifAuthSecretInvalid")
    assert "it has: token, username" in condition(body, "PullHealthy")["message"]
    secret(crd, "hayes-zone", **{"tls.crt": "CERT", "tls.key": "KEY"})
    wait_pull_condition(kube, "hayes", "False", "SifCaSecretNotFound")
    secret(crd, "hayes-ca", bundle="PEM")
    wait_pull_condition(kube, "hayes", "False", "SifCaSecretKeyMissing")
    secret(crd, "hayes-ca", **{"ca.crt": "PEM"})
    wait_pull_condition(kube, "hayes", "Unknown", "NoRunYet")
    assert any(e["reason"] == "SifAuthSecretNotFound" and e["type"] == "Warning"
               for e in kube.list("Event", NS) if e["involvedObject"]["name"] == "hayes")


def run_pull_job(crd: Any, kube: api.Kube, district: str, job_name: str,
                 attempts: list[tuple[PullResult, int]]) -> None:
    """A Job from the pull CronJob's template, as the CronJob controller would make it, each
    pod ended as a kubelet would with the result's line as termination message."""
    cronjob = kube.get("CronJob", NS, names.cronjob(district, names.JOB_PULL))
    assert cronjob is not None
    template = cronjob["spec"]["jobTemplate"]
    kube.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": job_name, "namespace": NS, "labels": template["metadata"]["labels"],
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                             "name": cronjob["metadata"]["name"],
                             "uid": cronjob["metadata"]["uid"], "controller": True}]},
        "spec": template["spec"]})
    done: set[str] = set()
    for result, exit_code in attempts:
        pod = wait_for(lambda: next((p for p in kube.list(
            "Pod", NS, f"{names.LABEL_JOB_NAME}={job_name}")
            if p["metadata"]["name"] not in done), None), what=f"a pod of {job_name}")
        crd.kubectl("-n", NS, "patch", "pod", pod["metadata"]["name"], "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": {
                        "phase": "Succeeded" if exit_code == 0 else "Failed",
                        "containerStatuses": [{
                            "name": pod["spec"]["containers"][0]["name"], "image": TEST_IMAGE,
                            "imageID": "", "ready": False, "restartCount": 0, "started": False,
                            "state": {"terminated": {
                                "exitCode": exit_code, "message": results.encode(result),
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "startedAt": "2026-11-28T04:00:00Z",
                                "finishedAt": "2026-11-28T04:01:00Z"}}}]}}))
        done.add(pod["metadata"]["name"])
    wait_for(lambda: names.ANNOTATION_RESULT_RECORDED in (
        (kube.get("Job", NS, job_name) or {}).get("metadata", {}).get("annotations") or {}),
        timeout=60, what=f"{job_name}'s result recorded")


def test_the_pull_pod_passes_restricted_pod_security(crd: Any, kube: api.Kube,
                                                    operator: OperatorProcess) -> None:
    cronjob = wait_for(lambda: kube.get("CronJob", NS, "polk-pull"), what="CronJob polk-pull")
    pod_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    admitted = crd.kubectl("-n", NS, "create", "--dry-run=server", "-f", "-", check=False,
                           input=json.dumps({"apiVersion": "v1", "kind": "Pod",
                                             "metadata": {"name": "pull-probe"},
                                             "spec": pod_spec}))
    assert admitted.returncode == 0, admitted.stderr
    # The admission is really enforced here: the same pod with one capability back is refused.
    loosened = json.loads(json.dumps(pod_spec))
    loosened["containers"][0]["securityContext"]["capabilities"] = {"add": ["NET_RAW"]}
    refused = crd.kubectl("-n", NS, "create", "--dry-run=server", "-f", "-", check=False,
                          input=json.dumps({"apiVersion": "v1", "kind": "Pod",
                                            "metadata": {"name": "pull-probe"},
                                            "spec": loosened}))
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr


def test_pull_results_land_in_status_events_and_the_webhook(
        crd: Any, kube: api.Kube, operator: OperatorProcess) -> None:
    hook = Hook()
    secret(crd, "grant-hook", url=hook.url)
    secret(crd, "grant-zone", username="SameGoal_grant", password="pw")
    apply_yaml(crd, district_manifest(
        "grant", NS, authorizedKeys=[KEY], processing={"formats": []},
        notifications={"webhookSecretRef": {"name": "grant-hook"}},
        integration={"mode": "pull", "sif": {"zoneURL": ZONE, "sourceId": "SameGoal_grant",
                                             "authSecretRef": {"name": "grant-zone"}}}))
    wait_pull_condition(kube, "grant", "Unknown", "NoRunYet")

    failed = PullResult(outcome=Outcome.FAILED, reason="UntrustedCertificate",
                        message="the zone's certificate is not signed by a trusted CA",
                        zone_url=ZONE, completed_at="2026-11-28T04:01:00Z")
    # backoffLimit 1: the job controller retries once before it gives the Job up.
    run_pull_job(crd, kube, "grant", "grant-pull-1", [(failed, 1), (failed, 1)])
    body = wait_pull_condition(kube, "grant", "False", "PullFailed")
    assert body["status"]["lastPull"] == {
        "outcome": "Failed", "reason": "UntrustedCertificate",
        "message": "the zone's certificate is not signed by a trusted CA", "epoch": "",
        "objects": [], "messages": 0, "packets": 0, "completedAt": "2026-11-28T04:01:00Z"}
    assert "(UntrustedCertificate)" in condition(body, "PullHealthy")["message"]
    grant_events = [e for e in kube.list("Event", NS) if e["involvedObject"]["name"] == "grant"]
    failures = [e for e in grant_events if e["reason"] == "JobFailed"]
    assert len(failures) == 1 and "pull job grant-pull-1 failed" in failures[0]["message"]
    # The recorder tells about the failure itself; no second Event for the transition.
    assert not [e for e in grant_events if e["reason"] == "PullFailed"]

    succeeded = PullResult(outcome=Outcome.SUCCEEDED,
                           message="pulled 6 objects into epoch 20261128-050012",
                           epoch="20261128-050012", zone_url=ZONE,
                           objects=("StudentPersonal=412", "SchoolInfo=5"), messages=14,
                           packets=17, completed_at="2026-11-28T05:00:12Z")
    run_pull_job(crd, kube, "grant", "grant-pull-2", [(succeeded, 0)])
    body = wait_pull_condition(kube, "grant", "True", "PullSucceeded")
    assert body["status"]["lastPull"]["epoch"] == "20261128-050012"
    assert body["status"]["lastPull"]["objects"] == ["StudentPersonal=412", "SchoolInfo=5"]
    # The failure's reason does not linger (the status is written as a merge patch).
    assert body["status"]["lastPull"]["reason"] == ""
    wait_for(lambda: any(e["reason"] == "PullSucceeded" and e["type"] == "Normal"
                         for e in kube.list("Event", NS)
                         if e["involvedObject"]["name"] == "grant"),
             what="a Normal Event for the recovered pull")

    hook.wait(1)
    time.sleep(RESYNC_SECONDS * 2)  # resyncs and further Job events must not post again
    hook.server.shutdown()
    assert [(m["event"], m["job"], m["jobKind"]) for m in hook.received] == [
        ("JobFailed", "grant-pull-1", "pull")]
    assert "not signed by a trusted CA" in hook.received[0]["message"]


def test_going_back_to_push_removes_the_cronjob_and_the_policy(
        crd: Any, kube: api.Kube, operator: OperatorProcess) -> None:
    secret(crd, "tyler-zone", username="SameGoal_tyler", password="pw")
    pull_district(crd, "tyler")
    wait_pull_condition(kube, "tyler", "Unknown", "NoRunYet")
    assert kube.get("CronJob", NS, "tyler-pull") is not None
    assert kube.get("NetworkPolicy", NS, "tyler-pull-egress") is not None
    crd.kubectl("-n", NS, "patch", "district", "tyler", "--type=merge", "-p", json.dumps(
        {"spec": {"integration": {"mode": "push", "sif": None}}}))
    wait_pull_condition(kube, "tyler", "True", "NotConfigured")
    wait_for(lambda: kube.get("CronJob", NS, "tyler-pull") is None
             and kube.get("NetworkPolicy", NS, "tyler-pull-egress") is None,
             what="the pull's CronJob and policy deleted")
    # The other children stay.
    assert kube.get("CronJob", NS, "tyler-epochs") is not None
    assert kube.get("NetworkPolicy", NS, "tyler-sftpd") is not None


def test_a_steady_resync_of_pulling_districts_writes_nothing(kube: api.Kube,
                                                            operator: OperatorProcess) -> None:
    districts = kube.list(names.KIND, NS)
    assert len(districts) >= 4
    for body in districts:
        wait_for(lambda n=body["metadata"]["name"]: settled(kube, NS, n),
                 what="every District reconciled")
    time.sleep(RESYNC_SECONDS)  # let late watch events (controllers' status updates) pass
    writes_before = operator.total("district_operator_api_writes_total")
    resync = 'district_operator_reconciles_total{result="ok",trigger="resync"}'
    resyncs_before = operator.metrics().get(resync, 0)
    wait_for(lambda: operator.metrics().get(resync, 0) >= resyncs_before + 2 * len(districts),
             timeout=RESYNC_SECONDS * 6, what="two full resyncs")
    assert operator.total("district_operator_api_writes_total") == writes_before
    assert operator.total("district_operator_reconcile_errors_total") == 0
