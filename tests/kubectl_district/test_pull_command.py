"""`kubectl district pull`: a Job from the District's pull CronJob, followed to its result.

As in test_jobs.py, no kubelet runs: each test ends the Job's pod through the pod status
subresource with the termination message `sftpd sif-pull` writes (the contract's PullResult),
the real job controller decides, and the real operator records the result in the status.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from district_contract import layout, results
from district_contract.results import Outcome, PullResult
from district_operator import api, names

from tests.district_operator.conftest import OperatorProcess, wait_for
from tests.kubectl_district.conftest import create_district, district_status, plugin
from tests.kubectl_district.test_jobs import Run, end_pod

pytestmark = pytest.mark.cluster
ZONE = "https://zis.polk.k12.example/zis/polk"


def wire(result: PullResult) -> dict[str, Any]:
    return json.loads(results.encode(result))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def polk(crd: Any, kube: api.Kube, namespace: str, operator: OperatorProcess) -> str:
    crd.kubectl("-n", namespace, "create", "secret", "generic", "polk-zone",
                "--from-literal=username=SameGoal_Polk", "--from-literal=password=pw")
    # Suspended, so that the CronJob controller starts no scheduled run during the tests.
    create_district(crd, namespace, "polk", suspend=True, processing={"formats": []},
                    integration={"mode": "pull", "sif": {
                        "zoneURL": ZONE, "sourceId": "SameGoal_Polk",
                        "authSecretRef": {"name": "polk-zone"}}})
    wait_for(lambda: kube.get("CronJob", namespace, names.cronjob("polk", names.JOB_PULL)),
             what="CronJob polk-pull")
    return "polk"


def test_pull_now_prints_what_the_zone_delivered(crd: Any, kube: api.Kube, namespace: str,
                                                 polk: str) -> None:
    run = Run(namespace, "pull", polk, "--timeout", "90")
    result = wire(PullResult(
        outcome=Outcome.SUCCEEDED, message="pulled 2 objects into epoch 20261129-040012",
        epoch="20261129-040012", zone_url=ZONE,
        objects=("StudentPersonal=412", "SchoolInfo=5"), messages=14, packets=17,
        completed_at="2026-11-29T04:00:12Z"))
    pod = end_pod(crd, kube, namespace, run.job, result, 0, set())
    code, out, err = run.finish()
    assert code == 0, err
    assert run.job.startswith("polk-pull-manual-")
    assert f"Job {run.job}: Succeeded: pulled 2 objects into epoch 20261129-040012" in out
    assert f"Zone: {ZONE}" in out
    lines = out.splitlines()
    assert ["StudentPersonal", "412"] in [line.split() for line in lines]
    assert "Messages acknowledged: 14, packets reassembled: 17" in out
    assert "Epoch: /upload/20261129-040012 (the epochs job imports it)" in out
    # The Job runs what the CronJob runs, with the zone's Secret mounted read-only.
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["sif-pull", "--root", layout.DATA_MOUNT, "--result-file",
                                 layout.TERMINATION_LOG]
    assert {"name": "sif-auth", "mountPath": layout.SIF_AUTH_DIR, "readOnly": True} in \
        container["volumeMounts"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    job = kube.get("Job", namespace, run.job)
    assert job is not None
    [owner] = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("CronJob", "polk-pull")
    last = wait_for(lambda: district_status(kube, namespace, polk).get("lastPull"),
                    what="lastPull in polk's status")
    assert last["epoch"] == "20261129-040012"
    assert last["objects"] == ["StudentPersonal=412", "SchoolInfo=5"]
    shown = plugin("status", polk, "-n", namespace)
    assert "Last pull:    Succeeded  20261129-040012  completed 2026-11-29T04:00:12Z" in \
        shown.stdout, shown.stdout


def test_a_failed_pull_exits_1_with_its_reason_in_json(crd: Any, kube: api.Kube,
                                                       namespace: str, polk: str) -> None:
    run = Run(namespace, "pull", polk, "-o", "json")
    failed = wire(PullResult(
        outcome=Outcome.FAILED, reason="AuthenticationFailed",
        message="the zone refused the agent's credentials (HTTP 401)", zone_url=ZONE,
        completed_at="2026-11-29T05:00:00Z"))
    done: set[str] = set()
    end_pod(crd, kube, namespace, run.job, failed, 1, done)
    # backoffLimit 1: the job controller tries once more (after its 10s back-off).
    end_pod(crd, kube, namespace, run.job, failed, 1, done)
    code, out, err = run.finish()
    assert code == 1, err
    printed = json.loads(out)
    assert (printed["kind"], printed["outcome"]) == ("pull", "Failed")
    assert printed["result"]["reason"] == "AuthenticationFailed"
    assert printed["message"] == "the zone refused the agent's credentials (HTTP 401)"
    status = wait_for(lambda: (lambda s: s if (s.get("lastPull") or {}).get("outcome")
                               == "Failed" else None)(district_status(kube, namespace, polk)),
                      what="the failed pull in polk's status")
    pull = next(c for c in status["conditions"] if c["type"] == "PullHealthy")
    assert (pull["status"], pull["reason"]) == ("False", "PullFailed")
    assert status["lastPull"]["reason"] == "AuthenticationFailed"
    shown = plugin("status", polk, "-n", namespace, "-o", "json")
    assert json.loads(shown.stdout)["lastPull"]["reason"] == "AuthenticationFailed"


def test_a_district_in_push_mode_has_nothing_to_pull(crd: Any, namespace: str,
                                                     operator: OperatorProcess) -> None:
    create_district(crd, namespace, "pushonly", authorizedKeys=[], suspend=True)
    refused = plugin("pull", "pushonly", "-n", namespace)
    assert refused.returncode == 1
    assert "CronJob pushonly-pull not found" in refused.stderr
    assert "spec.integration.mode: pull" in refused.stderr
