"""The download jobs in the status, computed purely: lastDocviewer, lastPdfs, DownloadsHealthy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from district_operator import status
from district_operator.conditions import Reason

from tests.district_operator.test_status import conditions, district, healthy

NOW = datetime(2026, 12, 2, 1, 31, tzinfo=UTC)
LATER = NOW + timedelta(days=1)
DATABASE = {"databaseSecretRef": {"name": "db"}}
DOCVIEWER = {"forms": ["IEP"], "baseURL": "https://viewer.example.org/d",
             "tokenSecretRef": {"name": "lincoln-docviewer"}}
PDFS = {"schedule": "0 4 * * 6", "forms": ["IEP"]}
DOCVIEWER_RESULT = {"kind": "docviewer", "outcome": "Succeeded", "message": "published",
                    "epoch": "20261202-013000", "rows": 1234, "bytes": 98765,
                    "today": "2026-12-02", "forms": ["IEP"],
                    "tokenExpiresAt": "2026-12-09T01:30:00.250000Z",
                    "completedAt": "2026-12-02T01:30:12.5Z", "kept": 3, "pruned": []}
PDFS_RESULT = {"kind": "pdfs", "outcome": "Succeeded", "message": "published",
               "epoch": "20261205-040000", "documents": 40, "bytes": 4_000_000,
               "today": "2026-12-05", "forms": ["IEP"], "skipped": ["17: no PDF", "18: no PDF"],
               "completedAt": "2026-12-05T04:02:00Z", "keepDays": 2, "pruned": []}


def both(**extra: Any) -> Any:
    return district(processing=DATABASE, downloads={"docviewer": DOCVIEWER, "pdfs": PDFS},
                    **extra)


def report(kind: str, result: dict[str, Any] | str, succeeded: bool = True
           ) -> status.JobReport:
    message = result if isinstance(result, str) else json.dumps(result)
    return status.parse_termination_message(kind, message, succeeded, "exit 1")


def test_a_docviewer_run_fills_last_docviewer_and_the_condition() -> None:
    observed = healthy()
    st = status.compute_status(both(), observed, {}, NOW)
    assert conditions(st)["DownloadsHealthy"] == ("Unknown", "NoRunYet")
    st = status.apply_job_report(st, report("docviewer", DOCVIEWER_RESULT),
                                 "lincoln-docviewer-1", 2, NOW, both())
    assert st["lastDocviewer"] == {
        "outcome": "Succeeded", "job": "lincoln-docviewer-1",
        "completedAt": "2026-12-02T01:30:12Z", "message": "published",
        "epoch": "20261202-013000", "rows": 1234, "bytes": 98765,
        "tokenExpiresAt": "2026-12-09T01:30:00Z"}
    condition = next(c for c in st["conditions"] if c["type"] == "DownloadsHealthy")
    assert (condition["status"], condition["reason"]) == ("True", "DownloadsSucceeded")
    assert condition["message"] == ("docviewer: epoch 20261202-013000 published "
                                    "2026-12-02T01:30:12Z; pdfs: no run yet")
    # The next reconcile computes the same condition: nothing to write, nothing to announce.
    again = status.compute_status(both(), observed, st, LATER)
    assert status.status_patch(st, again) == {}
    assert conditions(again)["Ready"] == ("True", "Ready")


def test_a_failed_run_keeps_the_published_epoch_and_makes_the_district_not_ready() -> None:
    st = status.apply_job_report({}, report("pdfs", PDFS_RESULT), "lincoln-pdfs-1", 2, NOW,
                                 both())
    assert st["lastPdfs"] == {"outcome": "Succeeded", "job": "lincoln-pdfs-1",
                              "completedAt": "2026-12-05T04:02:00Z", "message": "published",
                              "epoch": "20261205-040000", "documents": 40,
                              "bytes": 4_000_000, "skipped": 2}
    failed = {"kind": "pdfs", "outcome": "Failed", "reason": "DatabaseUnavailable",
              "message": "cannot connect to the database", "completedAt": "2026-12-12T04:00:05Z"}
    st = status.apply_job_report(st, report("pdfs", failed, succeeded=False), "lincoln-pdfs-2",
                                 2, LATER, both())
    assert st["lastPdfs"]["outcome"] == "Failed"
    assert st["lastPdfs"]["job"] == "lincoln-pdfs-2"
    assert st["lastPdfs"]["completedAt"] == "2026-12-12T04:00:05Z"
    assert st["lastPdfs"]["epoch"] == "20261205-040000"  # still the newest published
    assert conditions(st)["DownloadsHealthy"] == ("False", "PdfsFailed")
    assert "pdfs job lincoln-pdfs-2: cannot connect to the database" in next(
        c["message"] for c in st["conditions"] if c["type"] == "DownloadsHealthy")
    recomputed = status.compute_status(both(), healthy(), st, LATER)
    assert conditions(recomputed)["DownloadsHealthy"] == ("False", "PdfsFailed")
    assert conditions(recomputed)["Ready"] == ("False", "DownloadsNotReady")
    # Disabling the failing job takes its failure out of the condition.
    pdfs_off = district(processing=DATABASE, downloads={"docviewer": DOCVIEWER,
                                                        "pdfs": {**PDFS, "enabled": False}})
    assert conditions(status.compute_status(pdfs_off, healthy(), st, LATER))[
        "DownloadsHealthy"] == ("Unknown", "NoRunYet")


def test_both_failing_name_both_and_a_crash_without_a_result_counts() -> None:
    crash = report("docviewer", "Traceback (most recent call last):\nMemoryError", False)
    st = status.apply_job_report({}, crash, "lincoln-docviewer-9", 2, NOW, both())
    assert st["lastDocviewer"] == {"outcome": "Failed", "job": "lincoln-docviewer-9",
                                   "completedAt": "2026-12-02T01:31:00Z",
                                   "message": "MemoryError"}
    st = status.apply_job_report(st, report("pdfs", {"kind": "pdfs", "outcome": "Failed",
                                                     "message": "disk full"}, False),
                                 "lincoln-pdfs-9", 2, NOW, both())
    condition = next(c for c in st["conditions"] if c["type"] == "DownloadsHealthy")
    assert (condition["status"], condition["reason"]) == ("False", "DocviewerFailed")
    assert condition["message"] == ("docviewer job lincoln-docviewer-9: MemoryError; "
                                    "pdfs job lincoln-pdfs-9: disk full")


def test_an_older_run_recorded_late_does_not_replace_a_newer_one() -> None:
    st = status.apply_job_report({}, report("docviewer", DOCVIEWER_RESULT), "new", 2, NOW)
    older = dict(DOCVIEWER_RESULT, outcome="Failed", message="old failure",
                 completedAt="2026-12-01T01:30:00Z")
    late = status.apply_job_report(st, report("docviewer", older, False), "old", 2, LATER)
    assert late["lastDocviewer"] == st["lastDocviewer"]


def test_what_a_job_wrote_badly_cannot_break_the_status() -> None:
    odd = dict(DOCVIEWER_RESULT, completedAt="yesterday", tokenExpiresAt="2026-12-09T01:30:00")
    st = status.apply_job_report({}, report("docviewer", odd), "j", 2, NOW)
    assert st["lastDocviewer"]["completedAt"] == "2026-12-02T01:31:00Z"  # the recorder's clock
    assert "tokenExpiresAt" not in st["lastDocviewer"]  # no zone: left out
    huge = dict(DOCVIEWER_RESULT, rows=-5, bytes=10**30)
    st = status.apply_job_report({}, report("docviewer", huge), "j", 2, NOW)
    assert (st["lastDocviewer"]["rows"], st["lastDocviewer"]["bytes"]) == (0, 2**63 - 1)


@pytest.mark.parametrize(("problem_field", "reason"), [
    ("downloads_token", Reason.TOKEN_SECRET_NOT_FOUND),
    ("downloads_token", Reason.TOKEN_SECRET_KEY_MISSING),
    ("processing_database", Reason.DATABASE_SECRET_NOT_FOUND),
])
def test_a_setup_problem_wins_and_a_run_does_not_make_it_flap(problem_field: str,
                                                              reason: Reason) -> None:
    observed = healthy()
    setattr(observed, problem_field, status.SecretProblem(reason, "Secret x is missing"))
    st = status.compute_status(both(), observed, {}, NOW)
    assert conditions(st)["DownloadsHealthy"] == ("False", reason)
    assert conditions(st)["Ready"][0] == "False"
    after_run = status.apply_job_report(st, report("pdfs", PDFS_RESULT), "lincoln-pdfs-1", 2,
                                        LATER, both())
    assert conditions(after_run)["DownloadsHealthy"] == ("False", reason)
    assert after_run["lastPdfs"]["outcome"] == "Succeeded"
    # Fixed: the next reconcile turns to what the runs say.
    fixed = status.compute_status(both(), healthy(), after_run, LATER)
    assert conditions(fixed)["DownloadsHealthy"] == ("True", "DownloadsSucceeded")


def test_nothing_configured_and_no_database() -> None:
    st = status.compute_status(district(processing={"formats": []}), healthy(), {}, NOW)
    assert conditions(st)["DownloadsHealthy"] == ("True", "NotConfigured")
    no_database = district(processing={"formats": []}, downloads={"pdfs": PDFS})
    st = status.compute_status(no_database, healthy(), {}, NOW)
    assert conditions(st)["DownloadsHealthy"] == ("False", "NoDatabase")
    assert conditions(st)["Ready"] == ("False", "DownloadsNotReady")
