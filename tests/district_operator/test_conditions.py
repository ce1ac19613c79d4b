"""Condition types and reasons: one closed set, what status.py writes and docs/operator.md lists."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from district_contract.results import JobKind, Outcome
from district_operator import keys, status
from district_operator.conditions import (
    EPOCHS_OUTCOME_REASONS,
    NOT_READY,
    ConditionType,
    Reason,
)
from district_operator.model import parse_district

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
GOOD_KEY = keys.KeyCheck(accepted=(keys.AuthorizedKey("ssh-ed25519", "ssh-ed25519 AAAA", "fp"),),
                         rejected=())


def district(**spec: Any):  # type: ignore[no-untyped-def]
    return parse_district({"metadata": {"name": "lincoln", "namespace": "d", "uid": "u",
                                        "generation": 1}, "spec": spec})


def observed(**fields: Any) -> status.Observed:
    base: dict[str, Any] = {
        "key_check": GOOD_KEY,
        "pvc": {"spec": {"resources": {"requests": {"storage": "10Gi"}}},
                "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}},
        "deployment": {"status": {"availableReplicas": 1}},
        "service": {"spec": {"type": "ClusterIP"}}}
    return status.Observed(**{**base, **fields})


def conditions(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}


@pytest.mark.parametrize(("phase", "reason"), [
    ("Pending", "Pending"), ("Lost", "Lost"), ("", "NotBound"), ("Released2", "NotBound"),
    ("SomethingNew", "NotBound")])
def test_a_claims_phase_becomes_one_of_the_documented_reasons(phase: str, reason: str) -> None:
    st = status.compute_status(district(), observed(pvc={"status": {"phase": phase}}), {}, NOW)
    assert conditions(st)["StorageReady"] == ("False", reason)
    assert conditions(st)["Ready"] == ("False", "StorageNotReady")


@pytest.mark.parametrize(("fields", "ready_reason"), [
    ({"deployment": None}, Reason.SERVER_NOT_READY),
    ({"key_check": keys.KeyCheck((), ())}, Reason.KEYS_NOT_READY),
    ({"processing_database": status.SecretProblem(Reason.DATABASE_SECRET_NOT_FOUND, "gone")},
     Reason.PROCESSING_NOT_READY),
    ({"host_keys_missing": True}, Reason.HOST_KEYS_NOT_READY),
])
def test_ready_names_the_first_problem_with_its_constant(fields: dict[str, Any],
                                                         ready_reason: Reason) -> None:
    st = status.compute_status(district(), observed(**fields), {}, NOW)
    assert conditions(st)["Ready"] == ("False", ready_reason)


def test_every_reason_status_writes_is_a_constant_of_its_type() -> None:
    statuses = [
        status.compute_status(district(suspend=True), observed(), {}, NOW),
        status.compute_status(district(backups={"databaseSecretRef": {"name": "db"}}),
                              observed(apply_errors={"Deployment": "no",
                                                     "PersistentVolumeClaim": "no"}), {}, NOW),
    ]
    for outcome in Outcome:
        report = status.JobReport(JobKind.EPOCHS, outcome, "m")
        statuses.append(status.apply_job_report({}, report, "job", 1, NOW))
    for st in statuses:
        for condition in st["conditions"]:
            assert condition["type"] in set(ConditionType)
            assert condition["reason"] in set(Reason)
    assert set(EPOCHS_OUTCOME_REASONS) == set(Outcome)
    # News about the district's uploads, not about whether it can log in, and the informational
    # rotation in flight: Ready ignores them.
    assert set(NOT_READY) == set(ConditionType) - {ConditionType.READY,
                                                   ConditionType.UPLOADS_NEED_ATTENTION,
                                                   ConditionType.UPLOADS_OVERDUE,
                                                   ConditionType.HOST_KEYS_ROTATING}


def documented_reasons() -> dict[str, set[str]]:
    """docs/operator.md's Status table: condition type -> the reasons its row names."""
    rows: dict[str, set[str]] = {}
    text = (REPO / "docs" / "operator.md").read_text()
    table = text[text.index("| condition | True |"):]
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        kind = re.match(r"`(\w+)`", cells[0])
        assert kind is not None, line
        rows[kind.group(1)] = set(re.findall(r"`([A-Z]\w+)`", " ".join(cells[1:])))
    return rows


def test_the_docs_list_every_condition_type_and_reason_and_nothing_else() -> None:
    rows = documented_reasons()
    assert set(rows) == {str(t) for t in ConditionType}
    documented = set().union(*rows.values())
    # `DatabaseSecret*` in the docs stands for the three reasons of that family.
    assert documented - {str(r) for r in Reason} == set()
    assert {str(r) for r in Reason} - documented == set()
