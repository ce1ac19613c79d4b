"""Finished Jobs into their District: the result into the status, Events and webhook posts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from district_contract.results import EpochsResult

from district_operator import api, names, overdue, secretrefs, status
from district_operator.conditions import Reason
from district_operator.events import emit_transitions
from district_operator.model import District, parse_district
from district_operator.notifications import Notifier
from district_operator.watchcache import WatchCache

# Event reasons (and webhook `event` values) for news about one finished Job.
EVENT_JOB_FAILED: Final = "JobFailed"
EVENT_UPLOADS_NEED_ATTENTION: Final = "UploadsNeedAttention"
# Transitions that _announce tells about itself, with the Job's name.
ANNOUNCED_REASONS: Final = frozenset({Reason.JOB_FAILED, Reason.BACKUP_FAILED,
                               Reason.PULL_FAILED, Reason.UNRECOGNIZED_UPLOADS})


class JobRecorder:
    """Records each finished Job once: its District's status, then Events and webhook posts."""

    def __init__(self, kube: api.Kube, cache: WatchCache, notifier: Notifier | None = None,
                 clock: status.Clock = status.utc_now) -> None:
        self.kube = kube
        self.cache = cache
        self.notifier = notifier
        self.clock = clock

    def record(self, job_body: Mapping[str, Any]) -> bool:
        """Copy a finished Job's result into its District's status; True when it was recorded."""
        meta = job_body.get("metadata", {})
        labels = meta.get("labels") or {}
        district_name = labels.get(names.LABEL_DISTRICT)
        job_kind = labels.get(names.LABEL_COMPONENT)
        namespace = meta.get("namespace", "")
        if not district_name or job_kind not in names.JOBS:
            return False
        body = self.kube.get(names.KIND, namespace, district_name)
        if body is None:
            return False
        district = parse_district(body)
        report = self.report(job_kind, job_body)
        memory = self.cache.memory(district.key)
        with memory.lock:
            memory.adopt(district.uid)
            remembered = memory.status
            previous = dict(remembered if remembered is not None else body.get("status") or {})
            now = self.clock()
            desired = status.apply_job_report(previous, report, meta["name"],
                                              district.generation, now)
            # A newly processed epoch ends an overdue episode at once, not at the next resync.
            desired = status.refresh_uploads_overdue(desired, district, now)
            patch = status.status_patch(previous, desired)
            if patch:
                self.kube.patch_district_status(namespace, district_name, patch)
                emit_transitions(self.kube, body, previous, desired, ANNOUNCED_REASONS)
                overdue.announce(self.kube, self.notifier, district, previous, desired)
            memory.status = desired
            self._announce(body, district, report, meta["name"], previous)
            self.kube.merge_patch("Job", namespace, meta["name"], {"metadata": {
                "annotations": {names.ANNOTATION_RESULT_RECORDED: str(report.outcome)}}})
        return True

    def report(self, job_kind: str, job_body: Mapping[str, Any]) -> status.JobReport:
        """What the Job's newest pod left in its termination message."""
        meta = job_body["metadata"]
        pods = self.kube.list("Pod", meta["namespace"],
                              f"{names.LABEL_JOB_NAME}={meta['name']}")
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
        message, ended = status.last_termination(pods)
        fallback = ended or "the job failed without a result"
        succeeded = any(c.get("type") == "Complete" and c.get("status") == "True"
                        for c in (job_body.get("status") or {}).get("conditions") or [])
        return status.parse_termination_message(job_kind, message, succeeded, fallback)

    def _announce(self, body: Mapping[str, Any], district: District, report: status.JobReport,
                  job_name: str, previous: Mapping[str, Any]) -> None:
        """Events and webhook posts for what needs people: once per finished Job."""
        messages: list[tuple[str, str, dict[str, Any]]] = []
        if report.failed:
            messages.append((EVENT_JOB_FAILED,
                             f"{report.job} job {job_name} failed: {report.message}", {}))
        waiting_before = set(previous.get("uploadsNeedingAttention") or [])
        unrecognized = report.result.unrecognized \
            if isinstance(report.result, EpochsResult) else ()
        fresh_unrecognized = [e for e in unrecognized if e not in waiting_before]
        if fresh_unrecognized:
            messages.append((EVENT_UPLOADS_NEED_ATTENTION,
                             f"upload(s) not recognized, waiting for staff: "
                             f"{', '.join(fresh_unrecognized)}",
                             {"epochs": fresh_unrecognized}))
        if not messages:
            return
        url = None
        if district.webhook_secret is not None and self.notifier is not None:
            url = secretrefs.read(self.kube, district.namespace, district.webhook_secret).value
        for reason, text, extra in messages:
            self.kube.event(body, "Warning", reason, text)
            if url and self.notifier is not None:
                self.notifier.submit(url.strip(), {
                    "district": district.name, "namespace": district.namespace,
                    "event": reason, "job": job_name, "jobKind": str(report.job),
                    "outcome": str(report.outcome), "message": text, **extra})
