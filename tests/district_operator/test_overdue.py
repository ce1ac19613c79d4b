"""Missed uploads on the real control plane: UploadsOverdue, its Events and one webhook post per
overdue episode, across resyncs and an operator restart, cleared by the next processed epoch.

The operator is a real `district-operator run` (resync every 3 s); its clock is moved with
`--clock-offset` (what a drill would do) and the epochs Jobs' results carry the processing times
the test needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from district_operator import api, names

from tests.district_operator.conftest import (
    OperatorProcess,
    apply_yaml,
    district_manifest,
    finish_job,
    make_namespace,
    settled,
    wait_for,
)
from tests.district_operator.test_notifications import Hook

pytestmark = pytest.mark.cluster
NS = "operator-overdue"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
       " it@monroe.k12.example")
RESYNC = 'district_operator_reconciles_total{result="ok",trigger="resync"}'
# The second operator's clock is this far ahead: an epoch processed now is due a minute later.
AHEAD = 3600 - 60


@pytest.fixture(scope="module")
def namespace(crd: Any) -> Iterator[str]:
    yield make_namespace(crd, NS)
    crd.kubectl("delete", "namespace", NS, "--wait=false")


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.server.shutdown()


def overdue_condition(kube: api.Kube, name: str) -> dict[str, Any] | None:
    body = kube.get(names.KIND, NS, name)
    conditions = (body or {}).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "UploadsOverdue"), None)


def wait_overdue(kube: api.Kube, name: str, status: str, reason: str,
                 timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = overdue_condition(kube, name)
        return found if found and (found["status"], found["reason"]) == (status, reason) \
            else None
    return wait_for(check, timeout=timeout,  # type: ignore[no-any-return]
                    what=f"{name}: UploadsOverdue={status} ({reason})")


def overdue_events(kube: api.Kube, name: str) -> list[tuple[str, str]]:
    return sorted((e["type"], e["reason"]) for e in kube.list("Event", NS)
                  if e["involvedObject"].get("name") == name
                  and e["involvedObject"].get("kind") == names.KIND
                  and e["message"].startswith("UploadsOverdue:"))


def epoch_processed_at(crd: Any, kube: api.Kube, job_name: str, processed_at: datetime) -> None:
    result = {"kind": "epochs", "outcome": "Succeeded", "message": "1 processed",
              "processed": [{"name": job_name, "outcome": "Succeeded", "format": "oneroster",
                             "processedAt": processed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "rows": 12, "errors": 0}],
              "unrecognized": [], "pending": []}
    finish_job(crd, kube, NS, "monroe-epochs", job_name, [(json.dumps(result), 0)])
    wait_for(lambda: names.ANNOTATION_RESULT_RECORDED in (
        (kube.get("Job", NS, job_name) or {}).get("metadata", {}).get("annotations") or {}),
        what=f"{job_name} recorded")


def two_resyncs(operator: OperatorProcess) -> None:
    """Wait until every District went through two more resync rounds."""
    before = operator.metrics().get(RESYNC, 0)
    wait_for(lambda: operator.metrics().get(RESYNC, 0) >= before + 2 * 2, timeout=60,
             what="two resync rounds")


def test_overdue_fires_once_per_episode_across_resyncs_and_restarts_and_clears(
        crd: Any, kube: api.Kube, namespace: str, hook: Hook,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    logs: Path = tmp_path_factory.mktemp("overdue")
    apply_yaml(crd, {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "monroe-hook", "namespace": NS},
                     "stringData": {"url": hook.url}})
    apply_yaml(crd, district_manifest(
        "monroe", NS, authorizedKeys=[KEY], processing={"expectEvery": "1h", "formats": []},
        notifications={"webhookSecretRef": {"name": "monroe-hook"}}))
    # A District created at the same time that never gets an upload.
    apply_yaml(crd, district_manifest("madison", NS, authorizedKeys=[KEY],
                                      processing={"expectEvery": "1h", "formats": []}))
    operator = OperatorProcess(NS, logs / "first.log")
    try:
        wait_for(lambda: settled(kube, NS, "monroe") and settled(kube, NS, "madison"),
                 what="both Districts reconciled")
        assert overdue_condition(kube, "monroe")["reason"] == "OnSchedule"  # type: ignore[index]
        assert overdue_condition(kube, "madison")["reason"] == "OnSchedule"  # type: ignore[index]

        # An epoch processed two hours ago: overdue at once (the job recorder), one post.
        now = datetime.now(UTC)
        epoch_processed_at(crd, kube, "monroe-epochs-1", now - timedelta(hours=2))
        # Written with the Job's result, before the Job is marked recorded: no resync needed.
        started = overdue_condition(kube, "monroe")
        assert started is not None and (started["status"], started["reason"]) == \
            ("True", "Overdue")
        assert "expected every 1h" in started["message"]
        hook.wait(1)
        assert [m["event"] for m in hook.received] == ["UploadsOverdue"]
        post = hook.received[0]
        assert (post["district"], post["namespace"], post["reason"], post["expectEvery"]) == \
            ("monroe", NS, "Overdue", "1h")
        assert post["lastEpoch"]["name"] == "monroe-epochs-1"
        assert post["message"] == started["message"]
        two_resyncs(operator)
        assert overdue_events(kube, "monroe") == [("Warning", "Overdue")]
    finally:
        operator.kill()

    # A restarted operator finds the episode in the status: no second post, no second Event.
    # Its clock runs 59 minutes ahead, so that an epoch processed now is due again (expectEvery
    # 1h) one real minute later: the resync alone, with no change to the District, must notice.
    operator = OperatorProcess(NS, logs / "second.log", "--clock-offset", str(AHEAD))
    try:
        two_resyncs(operator)
        assert overdue_condition(kube, "monroe") == started  # same transition time, untouched
        assert len(hook.received) == 1
        assert overdue_events(kube, "monroe") == [("Warning", "Overdue")]

        # The next processed epoch ends the episode: False with a Normal Event.
        epoch_processed_at(crd, kube, "monroe-epochs-2", datetime.now(UTC))
        cleared = overdue_condition(kube, "monroe")
        assert cleared is not None and (cleared["status"], cleared["reason"]) == \
            ("False", "OnSchedule"), "cleared too late to see: is the machine very slow?"
        assert "the next by" in cleared["message"]
        assert overdue_events(kube, "monroe") == [("Normal", "OnSchedule"),
                                                  ("Warning", "Overdue")]
        assert len(hook.received) == 1

        # A minute later nothing came: a new episode, with its own Event and post.
        wait_overdue(kube, "monroe", "True", "Overdue", timeout=3600 - AHEAD + 120)
        hook.wait(2)
        assert [(m["event"], m["lastEpoch"]["name"]) for m in hook.received] == [
            ("UploadsOverdue", "monroe-epochs-1"), ("UploadsOverdue", "monroe-epochs-2")]
        # madison never had an upload: overdue since its creation.
        never = wait_overdue(kube, "madison", "True", "NeverUploaded")
        assert "since the District was created at" in never["message"]
        assert overdue_events(kube, "madison") == [("Warning", "NeverUploaded")]
        two_resyncs(operator)
        assert len(hook.received) == 2
        assert overdue_events(kube, "monroe") == [("Normal", "OnSchedule"),
                                                  ("Warning", "Overdue"), ("Warning", "Overdue")]
        assert operator.total("district_operator_reconcile_errors_total") == 0
    finally:
        operator.stop()
