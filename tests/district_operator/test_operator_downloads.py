"""spec.downloads through the real operator on the real control plane: the CronJobs as built,
the token Secret checked, finished Jobs into lastDocviewer/lastPdfs, DownloadsHealthy, Events
and the webhook, and a disabled job's CronJob removed.

No kubelet runs here: each Job's pod is ended through the pod status subresource with the
termination message the real job writes, and the real job controller decides the Job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
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
NS = "operator-downloads"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly it@x"
DOCVIEWER = {"forms": ["IEP", "504 Plan"], "baseURL": "https://viewer.example.org/d",
             "tokenSecretRef": {"name": "polk-docviewer"}}
PDFS = {"schedule": "0 4 1 7 *", "forms": ["IEP"], "students": ["S1"]}


@pytest.fixture(scope="module")
def namespace(crd: Any) -> Iterator[str]:
    yield make_namespace(crd, NS)
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


def wait_condition(kube: api.Kube, name: str, kind: str, status: str, reason: str,
                   timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = kube.get(names.KIND, NS, name)
        for c in (body or {}).get("status", {}).get("conditions", []):
            if (c["type"], c["status"], c["reason"]) == (kind, status, reason):
                return body
        return None
    return wait_for(check, timeout=timeout,  # type: ignore[no-any-return]
                    what=f"{name}: {kind}={status} ({reason})")


def run_job(crd: Any, kube: api.Kube, cronjob_name: str, job_name: str,
            results: list[tuple[str, int]]) -> None:
    """A Job from the CronJob's template (as the CronJob controller makes it); each of its pods
    ended with (termination message, exit code) as a kubelet would."""
    cronjob = kube.get("CronJob", NS, cronjob_name)
    assert cronjob is not None
    template = cronjob["spec"]["jobTemplate"]
    kube.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": job_name, "namespace": NS, "labels": template["metadata"]["labels"],
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                             "name": cronjob_name, "uid": cronjob["metadata"]["uid"],
                             "controller": True}]}, "spec": template["spec"]})
    done: set[str] = set()
    for message, exit_code in results:
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
                                "exitCode": exit_code, "message": message,
                                "reason": "Completed" if exit_code == 0 else "Error",
                                "startedAt": "2026-12-02T01:30:00Z",
                                "finishedAt": "2026-12-02T01:31:00Z"}}}]}}))
        done.add(pod["metadata"]["name"])
    wait_for(lambda: names.ANNOTATION_RESULT_RECORDED in
             ((kube.get("Job", NS, job_name) or {}).get("metadata", {}).get("annotations")
              or {}), timeout=60, what=f"{job_name}'s result recorded")


def events(kube: api.Kube, district: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("Event", NS)
            if e["involvedObject"].get("name") == district
            and e["involvedObject"].get("kind") == names.KIND]


def test_downloads_from_spec_to_status(crd: Any, kube: api.Kube,
                                       operator: OperatorProcess) -> None:
    hook = Hook()
    secret(crd, "polk-hook", url=hook.url)
    secret(crd, "polk-db", uri="postgresql://polk@db.example/polk")
    apply_yaml(crd, district_manifest(
        "polk", NS, authorizedKeys=[KEY], login="polk.k12.example",
        processing={"databaseSecretRef": {"name": "polk-db"}},
        downloads={"docviewer": DOCVIEWER, "pdfs": PDFS, "directories": ["state-ids"]},
        notifications={"webhookSecretRef": {"name": "polk-hook"}}))

    # The token Secret does not exist yet: said so, and the CronJobs are there all the same.
    body = wait_condition(kube, "polk", "DownloadsHealthy", "False", "TokenSecretNotFound")
    assert "polk-docviewer" in condition(body, "DownloadsHealthy")["message"]
    assert condition(body, "Ready")["status"] == "False"
    district = parse_district(body)
    inputs = builders.BuildInputs(image=TEST_IMAGE)
    for manifest in (*builders.cronjobs(district, inputs).values(),
                     builders.deployment(district, inputs)):
        live = kube.get(manifest["kind"], NS, manifest["metadata"]["name"])
        assert live is not None, manifest["metadata"]["name"]
        assert drift.contains(manifest, live), manifest["metadata"]["name"]
    docviewer_pod = kube.get("CronJob", NS, "polk-docviewer")["spec"][  # type: ignore[index]
        "jobTemplate"]["spec"]["template"]["spec"]
    assert docviewer_pod["automountServiceAccountToken"] is False
    assert docviewer_pod["volumes"][-1]["secret"]["secretName"] == "polk-docviewer"
    epochs_env = {e["name"]: e.get("value") for e in kube.get(  # type: ignore[index]
        "CronJob", NS, "polk-epochs")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    assert epochs_env["SFTPD_DISTRICT_DOMAIN"] == "polk.k12.example"
    server_env = {e["name"]: e.get("value") for e in kube.get(  # type: ignore[index]
        "Deployment", NS, "polk-sftpd")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert server_env["SFTPD_DOWNLOAD_DIRECTORIES"] == "state-ids"

    secret(crd, "polk-docviewer", other="x")
    wait_condition(kube, "polk", "DownloadsHealthy", "False", "TokenSecretKeyMissing",
                   timeout=RESYNC_SECONDS * 5)
    secret(crd, "polk-docviewer", key="lCHtfbXUOh8ROxIehW4qCBpP8PdnFYpZmA5Qr3wX3Hk=")
    wait_condition(kube, "polk", "DownloadsHealthy", "Unknown", "NoRunYet",
                   timeout=RESYNC_SECONDS * 5)

    docviewer = {"kind": "docviewer", "outcome": "Succeeded", "message": "published",
                 "epoch": "20261202-013000", "rows": 1234, "bytes": 98765,
                 "today": "2026-12-02", "forms": ["IEP", "504 Plan"],
                 "tokenExpiresAt": "2026-12-09T01:30:00Z",
                 "completedAt": "2026-12-02T01:30:12Z", "kept": 1, "pruned": []}
    run_job(crd, kube, "polk-docviewer", "polk-docviewer-1", [(json.dumps(docviewer), 0)])
    body = kube.get(names.KIND, NS, "polk")
    assert body is not None
    assert body["status"]["lastDocviewer"] == {
        "outcome": "Succeeded", "job": "polk-docviewer-1", "completedAt": "2026-12-02T01:30:12Z",
        "message": "published", "epoch": "20261202-013000", "rows": 1234, "bytes": 98765,
        "tokenExpiresAt": "2026-12-09T01:30:00Z"}
    assert condition(body, "DownloadsHealthy")["reason"] == "DownloadsSucceeded"

    failed = json.dumps({"kind": "pdfs", "outcome": "Failed", "reason": "DatabaseUnavailable",
                         "message": "cannot connect to the database"})
    # backoffLimit 1: the job controller retries once before it gives the Job up.
    run_job(crd, kube, "polk-pdfs", "polk-pdfs-1", [(failed, 1), (failed, 1)])
    body = kube.get(names.KIND, NS, "polk")
    assert body is not None
    assert body["status"]["lastPdfs"]["outcome"] == "Failed"
    assert condition(body, "DownloadsHealthy")["reason"] == "PdfsFailed"
    assert "cannot connect to the database" in condition(body, "DownloadsHealthy")["message"]
    # Ready names every problem (no volume provisioner runs here, so storage comes first).
    wait_for(lambda: "DownloadsHealthy: pdfs job polk-pdfs-1: cannot connect" in condition(
        kube.get(names.KIND, NS, "polk"), "Ready")["message"],  # type: ignore[arg-type]
        timeout=RESYNC_SECONDS * 5, what="Ready to name the failed download")
    assert body["status"]["lastDocviewer"]["epoch"] == "20261202-013000"
    job_failed = [e for e in events(kube, "polk") if e["reason"] == "JobFailed"]
    assert [e["type"] for e in job_failed] == ["Warning"]
    assert "pdfs job polk-pdfs-1 failed: cannot connect to the database" in \
        job_failed[0]["message"]
    # Announced once, as JobFailed with the Job's name: not again as the condition's transition.
    assert not [e for e in events(kube, "polk") if e["reason"] == "PdfsFailed"]

    pdfs = {"kind": "pdfs", "outcome": "Succeeded", "message": "published",
            "epoch": "20261209-040000", "documents": 3, "bytes": 30000, "today": "2026-12-09",
            "forms": ["IEP"], "skipped": ["9: no PDF"], "completedAt": "2026-12-09T04:00:09Z",
            "keepDays": 2, "pruned": []}
    run_job(crd, kube, "polk-pdfs", "polk-pdfs-2", [(json.dumps(pdfs), 0)])
    body = kube.get(names.KIND, NS, "polk")
    assert body is not None
    assert body["status"]["lastPdfs"] == {
        "outcome": "Succeeded", "job": "polk-pdfs-2", "completedAt": "2026-12-09T04:00:09Z",
        "message": "published", "epoch": "20261209-040000", "documents": 3, "bytes": 30000,
        "skipped": 1}
    assert condition(body, "DownloadsHealthy")["reason"] == "DownloadsSucceeded"
    wait_for(lambda: any(e["reason"] == "DownloadsSucceeded" and e["type"] == "Normal"
                         for e in events(kube, "polk")), what="a recovery Event")

    hook.wait(1)
    time.sleep(RESYNC_SECONDS * 2)  # resyncs and later Job events must not post again
    hook.server.shutdown()
    assert [(m["event"], m["job"], m["jobKind"]) for m in hook.received] == [
        ("JobFailed", "polk-pdfs-1", "pdfs")]

    # Disabled: the CronJob goes, the settings stay, its last run no longer counts.
    crd.kubectl("-n", NS, "patch", "district", "polk", "--type=merge", "-p", json.dumps(
        {"spec": {"downloads": {"pdfs": {"enabled": False}}}}))
    wait_for(lambda: kube.get("CronJob", NS, "polk-pdfs") is None,
             what="the pdfs CronJob to be removed")
    assert kube.get("CronJob", NS, "polk-docviewer") is not None
    body = wait_for(lambda: settled(kube, NS, "polk"), what="polk reconciled")
    assert condition(body, "DownloadsHealthy")["message"] == (
        "docviewer: epoch 20261202-013000 published 2026-12-02T01:30:12Z")
    assert operator.total("district_operator_reconcile_errors_total") == 0
