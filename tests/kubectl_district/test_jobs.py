"""`epochs ... process|mark-processed` and `backup`: a Job from the CronJob, followed to its result.

No kubelet runs here, so pods never start: each test ends the Job's pod through the pod status
subresource with the termination message a real job writes, as a kubelet would. The job
controller (real) then marks the Job Complete or Failed, and the operator (real) records the
result in the District's status.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from district_operator import api, names

from tests.conftest import require_binary
from tests.district_operator.conftest import TEST_IMAGE, OperatorProcess, wait_for
from tests.kubectl_district.conftest import (
    create_district,
    district_status,
    patch_status,
    plugin,
)

pytestmark = pytest.mark.cluster
EPOCH = "2026-11-28T0200Z"


@pytest.fixture(scope="module")
def monroe(crd: Any, kube: api.Kube, namespace: str, operator: OperatorProcess) -> str:
    crd.kubectl("-n", namespace, "create", "secret", "generic", "monroe-db",
                "--from-literal=uri=postgresql://monroe@db.example/monroe")
    # Suspended, so that the CronJob controller starts no scheduled run during the tests.
    create_district(crd, namespace, "monroe", suspend=True,
                    processing={"databaseSecretRef": {"name": "monroe-db"}},
                    backups={"databaseSecretRef": {"name": "monroe-db"}})
    for job in (names.JOB_EPOCHS, names.JOB_BACKUP):
        wait_for(lambda j=job: kube.get("CronJob", namespace, names.cronjob("monroe", j)),
                 what=f"CronJob monroe-{job}")
    return "monroe"


class Run:
    """The plugin following a Job, with the Job's name read from its first line."""

    def __init__(self, namespace: str, *args: str) -> None:
        self.process = subprocess.Popen([require_binary("kubectl-district"), "-n", namespace,
                                         *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        self.preamble = ""
        while not self.preamble.endswith("\n") or "job.batch/" not in self.preamble:
            line = self.process.stderr.readline()
            assert line, self.preamble
            self.preamble += line
        created = self.preamble.splitlines()[-1]
        self.job = created.split()[0].removeprefix("job.batch/")

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def end_pod(crd: Any, kube: api.Kube, namespace: str, job: str, result: dict[str, Any],
            exit_code: int, done: set[str]) -> dict[str, Any]:
    """End the Job's next pod as its kubelet would, with `result` as termination message."""
    pod = wait_for(lambda: next((p for p in kube.list(
        "Pod", namespace, f"{names.LABEL_JOB_NAME}={job}")
        if p["metadata"]["name"] not in done), None), what=f"a pod of Job {job}")
    name = pod["metadata"]["name"]
    patch_status(crd, "pod", namespace, name, {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [{
            "name": pod["spec"]["containers"][0]["name"], "image": TEST_IMAGE, "imageID": "",
            "ready": False, "restartCount": 0, "started": False,
            "state": {"terminated": {
                "exitCode": exit_code, "message": json.dumps(result),
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": "2026-11-29T02:00:00Z", "finishedAt": "2026-11-29T02:01:00Z"}}}]})
    done.add(name)
    return pod


def test_backup_now(crd: Any, kube: api.Kube, namespace: str, monroe: str) -> None:
    run = Run(namespace, "backup", monroe, "--timeout", "90")
    backup = {"kind": "backup", "outcome": "Succeeded", "file": "monroe-20261129T020000Z.dump",
              "bytes": 2 * 1024 * 1024, "sha256": "ab" * 32,
              "completedAt": "2026-11-29T02:01:00Z", "kept": 2,
              "pruned": ["monroe-20261101T020000Z.dump"], "message": "backup written"}
    pod = end_pod(crd, kube, namespace, run.job, backup, 0, set())
    code, out, err = run.finish()
    assert code == 0, err
    assert f"Job {run.job}: Succeeded: backup written" in out
    assert "/downloads/backups/monroe-20261129T020000Z.dump  2.0 MiB" in out
    assert "pruned: monroe-20261101T020000Z.dump" in out
    assert "District monroe is suspended" in run.preamble
    # The progress display (stderr is not a terminal) prints elapsed time and the Job's state;
    # which states it catches depends on timing (the test may end the pod before a poll).
    assert re.search(r"^\s*\d+s (waiting for|pod )", err, re.MULTILINE), err

    job = kube.get("Job", namespace, run.job)
    cronjob = kube.get("CronJob", namespace, "monroe-backup")
    assert job is not None and cronjob is not None
    assert run.job.startswith("monroe-backup-manual-")
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == \
        ("CronJob", "monroe-backup", cronjob["metadata"]["uid"], True)
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    template = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert pod["spec"]["containers"][0]["args"] == template["args"]
    # The operator takes the manual Job's result into the District's status, like a scheduled one.
    wait_for(lambda: district_status(kube, namespace, monroe).get("lastBackup"),
             what="lastBackup in monroe's status")
    status = plugin("status", monroe, "-n", namespace)
    assert "Last backup:  monroe-20261129T020000Z.dump  2.0 MiB" in status.stdout


def test_process_epoch_now_with_a_format(crd: Any, kube: api.Kube, namespace: str,
                                         monroe: str) -> None:
    run = Run(namespace, "epochs", monroe, "process", EPOCH, "--format", "oneroster",
              "-o", "json")
    result = {"kind": "epochs", "outcome": "Succeeded", "message": "Succeeded: 1 processed",
              "processed": [{"name": EPOCH, "outcome": "Succeeded", "format": "oneroster",
                             "processedAt": "2026-11-29T02:01:00Z", "rows": 42, "errors": 0}],
              "unrecognized": [], "pending": []}
    pod = end_pod(crd, kube, namespace, run.job, result, 0, set())
    code, out, err = run.finish()
    assert code == 0, err
    assert pod["spec"]["containers"][0]["args"][-4:] == ["--epoch", EPOCH, "--format",
                                                         "oneroster"]
    printed = json.loads(out)
    assert (printed["job"], printed["outcome"]) == (run.job, "Succeeded")
    assert printed["result"]["processed"][0]["rows"] == 42


def test_failed_job_reports_the_failure(crd: Any, kube: api.Kube, namespace: str,
                                        monroe: str) -> None:
    run = Run(namespace, "epochs", monroe, "mark-processed", "old-dump")
    failed = {"kind": "epochs", "outcome": "Failed", "processed": [], "unrecognized": [],
              "pending": [], "message": "Failed: 0 processed; no epoch old-dump in /upload"}
    done: set[str] = set()
    pod = end_pod(crd, kube, namespace, run.job, failed, 1, done)
    assert pod["spec"]["containers"][0]["args"][-2:] == ["--mark-processed", "old-dump"]
    # backoffLimit 1: the job controller tries once more (after its 10s back-off).
    end_pod(crd, kube, namespace, run.job, failed, 1, done)
    code, out, err = run.finish()
    assert code == 1
    assert f"Job {run.job}: Failed: 0 processed; no epoch old-dump in /upload" in out
    assert "(attempt 2 of 2)" in err
    assert f"kubectl logs job/{run.job}" in err


def test_timeout_and_refused_input(crd: Any, kube: api.Kube, namespace: str,
                                   monroe: str) -> None:
    run = Run(namespace, "backup", monroe, "--timeout", "2")
    code, _, err = run.finish()
    assert code == 3
    assert f"Job {run.job} has not finished after 2s; it keeps running" in err
    assert "waiting to be scheduled" in err
    assert kube.get("Job", namespace, run.job) is not None
    crd.kubectl("-n", namespace, "delete", "job", run.job, "--wait=false")

    bad_epoch = plugin("epochs", monroe, "process", "../etc", "-n", namespace)
    assert bad_epoch.returncode == 2 and "is not an epoch name" in bad_epoch.stderr
    bad_format = plugin("epochs", monroe, "process", EPOCH, "--format", "csv2", "-n", namespace)
    assert bad_format.returncode == 2
    assert "unknown format 'csv2'" in bad_format.stderr and "oneroster" in bad_format.stderr
    create_district(crd, namespace, "nodb", authorizedKeys=[], suspend=True)
    no_cronjob = plugin("backup", "nodb", "-n", namespace)
    assert no_cronjob.returncode == 1
    assert "CronJob nodb-backup not found" in no_cronjob.stderr
    assert "spec.backups.databaseSecretRef" in no_cronjob.stderr
