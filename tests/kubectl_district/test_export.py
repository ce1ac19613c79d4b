"""`kubectl district export DISTRICT docviewer|pdfs`: a Job from the CronJob, followed, reported.

As in test_jobs.py: no kubelet runs here, so each test ends the Job's pod through the pod status
subresource with the termination message the real job writes; the real job controller decides
the Job and the real operator records the result.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from district_operator import api, names

from tests.district_operator.conftest import OperatorProcess, wait_for
from tests.kubectl_district.conftest import create_district, district_status, plugin
from tests.kubectl_district.test_jobs import Run, end_pod

pytestmark = pytest.mark.cluster
DOCVIEWER_RESULT = {"kind": "docviewer", "outcome": "Succeeded", "message": "published",
                    "epoch": "20261202-013000", "rows": 1234, "bytes": 3 * 1024 * 1024,
                    "today": "2026-12-02", "forms": ["IEP", "504 Plan"],
                    "tokenExpiresAt": "2026-12-09T01:30:00Z",
                    "completedAt": "2026-12-02T01:30:12Z", "kept": 2,
                    "pruned": ["20261125-013000"]}


@pytest.fixture(scope="module")
def madison(crd: Any, kube: api.Kube, namespace: str, operator: OperatorProcess) -> str:
    crd.kubectl("-n", namespace, "create", "secret", "generic", "madison-db",
                "--from-literal=uri=postgresql://madison@db.example/madison")
    crd.kubectl("-n", namespace, "create", "secret", "generic", "madison-docviewer",
                "--from-literal=key=lCHtfbXUOh8ROxIehW4qCBpP8PdnFYpZmA5Qr3wX3Hk=")
    # Suspended, so that the CronJob controller starts no scheduled run during the tests.
    create_district(crd, namespace, "madison", suspend=True,
                    processing={"databaseSecretRef": {"name": "madison-db"}},
                    downloads={"docviewer": {"forms": ["IEP", "504 Plan"],
                                             "baseURL": "https://viewer.example.org/madison",
                                             "tokenSecretRef": {"name": "madison-docviewer"}},
                               "pdfs": {"schedule": "0 4 1 7 *", "forms": ["IEP"]}})
    for job in names.DOWNLOAD_JOBS:
        wait_for(lambda j=job: kube.get("CronJob", namespace, names.cronjob("madison", j)),
                 what=f"CronJob madison-{job}")
    return "madison"


def test_export_docviewer_now(crd: Any, kube: api.Kube, namespace: str, madison: str) -> None:
    run = Run(namespace, "export", madison, "docviewer", "--timeout", "90")
    pod = end_pod(crd, kube, namespace, run.job, DOCVIEWER_RESULT, 0, set())
    code, out, err = run.finish()
    assert code == 0, err
    assert f"Job {run.job}: Succeeded: published" in out
    assert ("Epoch: /downloads/docviewer/20261202-013000/documents.csv  1234 row(s)  3.0 MiB  "
            "for 2026-12-02  forms IEP, 504 Plan") in out
    assert ("URL tokens expire 2026-12-09T01:30:00Z; kept 2 epoch(s); pruned: 20261125-013000"
            in out)
    assert "District madison is suspended" in run.preamble

    job = kube.get("Job", namespace, run.job)
    cronjob = kube.get("CronJob", namespace, "madison-docviewer")
    assert job is not None and cronjob is not None
    assert run.job.startswith("madison-docviewer-manual-")
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == \
        ("CronJob", "madison-docviewer", cronjob["metadata"]["uid"])
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    # The Job runs exactly what the CronJob would: the same arguments, token volume, no token.
    assert pod["spec"]["containers"][0]["args"] == template["containers"][0]["args"]
    assert pod["spec"]["containers"][0]["args"][-2:] == [
        "--token-key-file", "/etc/sftpd/docviewer-token/key"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "madison-docviewer" in {v.get("secret", {}).get("secretName")
                                   for v in pod["spec"]["volumes"]}

    wait_for(lambda: district_status(kube, namespace, madison).get("lastDocviewer"),
             what="lastDocviewer in madison's status")
    status = plugin("status", madison, "-n", namespace)
    assert "Docviewer:    20261202-013000  1234 rows  3.0 MiB; last run Succeeded " \
        "2026-12-02T01:30:12Z" in status.stdout


def test_export_pdfs_failure_and_json(crd: Any, kube: api.Kube, namespace: str,
                                      madison: str) -> None:
    run = Run(namespace, "export", madison, "pdfs")
    failed = {"kind": "pdfs", "outcome": "Failed", "reason": "DatabaseUnavailable",
              "message": "cannot connect to the database"}
    done: set[str] = set()
    pod = end_pod(crd, kube, namespace, run.job, failed, 1, done)
    assert pod["spec"]["containers"][0]["args"][0] == "pdfs"
    # backoffLimit 1: the job controller tries once more (after its 10s back-off).
    end_pod(crd, kube, namespace, run.job, failed, 1, done)
    code, out, err = run.finish()
    assert code == 1
    assert f"Job {run.job}: Failed: cannot connect to the database" in out
    assert f"kubectl logs job/{run.job}" in err

    run = Run(namespace, "export", madison, "pdfs", "-o", "json")
    result = {"kind": "pdfs", "outcome": "Succeeded", "message": "published",
              "epoch": "20261209-040000", "documents": 3, "bytes": 30000, "today": "2026-12-09",
              "forms": ["IEP"], "skipped": ["9: no PDF"], "completedAt": "2026-12-09T04:00:09Z",
              "keepDays": 2, "pruned": []}
    end_pod(crd, kube, namespace, run.job, result, 0, set())
    code, out, err = run.finish()
    assert code == 0, err
    printed = json.loads(out)
    assert (printed["job"], printed["kind"], printed["outcome"]) == (run.job, "pdfs",
                                                                     "Succeeded")
    assert printed["result"]["documents"] == 3
    assert printed["result"]["skipped"] == ["9: no PDF"]


def test_refused_export(crd: Any, namespace: str, madison: str) -> None:
    unknown = plugin("export", madison, "backups", "-n", namespace)
    assert unknown.returncode == 2
    assert "invalid choice: 'backups'" in unknown.stderr
    create_district(crd, namespace, "nodownloads", authorizedKeys=[], suspend=True)
    missing = plugin("export", "nodownloads", "docviewer", "-n", namespace)
    assert missing.returncode == 1
    assert "CronJob nodownloads-docviewer not found" in missing.stderr
    assert "spec.downloads.docviewer is not set or not enabled" in missing.stderr
