"""District status, computed purely: API-convention conditions, endpoint, host keys, job results."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from district_operator import keys, names
from district_operator.model import District

READY = "Ready"
STORAGE_READY = "StorageReady"
SERVER_READY = "ServerReady"
KEYS_VALID = "KeysValid"
PROCESSING_HEALTHY = "ProcessingHealthy"
BACKUPS_HEALTHY = "BackupsHealthy"
UPLOADS_NEED_ATTENTION = "UploadsNeedAttention"
CONDITION_ORDER = (READY, STORAGE_READY, SERVER_READY, KEYS_VALID, PROCESSING_HEALTHY,
                   BACKUPS_HEALTHY, UPLOADS_NEED_ATTENTION)

# Reasons that come from a finished Job: kept across reconciles until the next Job says otherwise.
JOB_REASONS = frozenset({"Succeeded", "NothingToDo", "NeedsAttention", "JobFailed",
                         "BackupSucceeded", "BackupFailed"})
# Conditions where "True" is the bad news (the API conventions allow such "abnormal-true" types).
ABNORMAL_TRUE = frozenset({UPLOADS_NEED_ATTENTION})


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass(frozen=True)
class SecretProblem:
    """Why a Secret the District names cannot be used (reason is CamelCase)."""

    reason: str
    message: str


@dataclass
class Observed:
    """What one reconcile saw and did: the inputs of the status."""

    key_check: keys.KeyCheck | None = None
    keys_problem: SecretProblem | None = None
    host_keys: tuple[keys.HostKey, ...] = ()
    pvc: Mapping[str, Any] | None = None
    deployment: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    processing_database: SecretProblem | None = None
    backups_database: SecretProblem | None = None
    apply_errors: dict[str, str] = field(default_factory=dict)


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _keys_condition(district: District, observed: Observed) -> Condition:
    if observed.keys_problem is not None:
        return Condition(KEYS_VALID, "False", observed.keys_problem.reason,
                         observed.keys_problem.message)
    check = observed.key_check or keys.KeyCheck((), ())
    if check.rejected:
        bad = "; ".join(f"{r.source}: {r.reason}" for r in check.rejected)
        reason = "InvalidKeys" if check.accepted else "NoValidKeys"
        return Condition(KEYS_VALID, "False", reason,
                         f"{len(check.rejected)} key(s) rejected and left out ({bad}); "
                         f"{len(check.accepted)} valid key(s) in use")
    if not check.accepted and not district.suspend:
        return Condition(KEYS_VALID, "False", "NoValidKeys", "no authorized key: nobody can log in")
    return Condition(KEYS_VALID, "True", "KeysValid",
                     f"{len(check.accepted)} valid key(s) in use")


def _storage_condition(district: District, observed: Observed) -> Condition:
    if "PersistentVolumeClaim" in observed.apply_errors:
        return Condition(STORAGE_READY, "False", "StorageUpdateRefused",
                         observed.apply_errors["PersistentVolumeClaim"])
    pvc = observed.pvc
    if pvc is None:
        return Condition(STORAGE_READY, "False", "NotCreated", "the data volume claim is missing")
    phase = (pvc.get("status") or {}).get("phase", "Pending")
    claim = names.data_pvc(district.name)
    if phase != "Bound":
        return Condition(STORAGE_READY, "False", phase if phase.isalpha() else "NotBound",
                         f"volume claim {claim} is {phase}: waiting for a volume")
    capacity = ((pvc.get("status") or {}).get("capacity") or {}).get("storage")
    requested = pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
    if capacity and requested and capacity != requested:
        return Condition(STORAGE_READY, "True", "Resizing",
                         f"volume claim {claim} is bound; resizing from {capacity} to {requested}")
    return Condition(STORAGE_READY, "True", "Bound", f"volume claim {claim} is bound")


def _server_condition(district: District, observed: Observed) -> Condition:
    if "Deployment" in observed.apply_errors:
        return Condition(SERVER_READY, "False", "ApplyFailed", observed.apply_errors["Deployment"])
    if district.suspend:
        return Condition(SERVER_READY, "False", "Suspended",
                         "the District is suspended: logins are refused, data is kept")
    deployment = observed.deployment
    if deployment is None:
        return Condition(SERVER_READY, "False", "NotCreated", "the SFTP server is not created")
    status = deployment.get("status") or {}
    if int(status.get("availableReplicas") or 0) >= 1:
        return Condition(SERVER_READY, "True", "Available", "the SFTP server accepts connections")
    # A fixed message: the Deployment's own wording changes with every controller update, and
    # each change would be one more status write.
    return Condition(SERVER_READY, "False", "Unavailable",
                     "the SFTP server is not ready yet (see its Deployment and pod)")


def _job_condition(kind: str, problem: SecretProblem | None, configured: bool,
                   previous: Mapping[str, Any] | None, absent_reason: str,
                   absent_message: str) -> Condition:
    if problem is not None:
        return Condition(kind, "False", problem.reason, problem.message)
    if not configured:
        return Condition(kind, "True", absent_reason, absent_message)
    if previous is not None and previous.get("reason") in JOB_REASONS:
        return Condition(kind, str(previous["status"]), str(previous["reason"]),
                         str(previous.get("message", "")))
    return Condition(kind, "Unknown", "NoRunYet", "no job has finished yet")


def _uploads_condition(status: Mapping[str, Any]) -> Condition:
    waiting = list(status.get("uploadsNeedingAttention") or [])
    if waiting:
        return Condition(UPLOADS_NEED_ATTENTION, "True", "UnrecognizedUploads",
                         f"{len(waiting)} upload(s) in /upload/ were not recognized and wait "
                         f"for staff: {', '.join(waiting[:10])}")
    return Condition(UPLOADS_NEED_ATTENTION, "False", "NoneWaiting",
                     "no unrecognized uploads are waiting")


def _ready_condition(parts: Sequence[Condition], district: District) -> Condition:
    if district.suspend:
        return Condition(READY, "False", "Suspended", "the District is suspended")
    by_type = {c.type: c for c in parts}
    problems = [c for c in (by_type[STORAGE_READY], by_type[SERVER_READY]) if c.status != "True"]
    if by_type[KEYS_VALID].reason in ("NoValidKeys", "KeysSecretNotFound", "KeysSecretKeyMissing"):
        problems.append(by_type[KEYS_VALID])
    problems += [c for c in (by_type[PROCESSING_HEALTHY], by_type[BACKUPS_HEALTHY])
                 if c.status == "False"]
    if not problems:
        return Condition(READY, "True", "Ready", "the district can log in and its jobs are healthy")
    first = problems[0]
    reason = first.type.removesuffix("Ready").removesuffix("Valid").removesuffix("Healthy")
    return Condition(READY, "False", f"{reason}NotReady",
                     "; ".join(f"{c.type}: {c.message}" for c in problems))


def merge_conditions(previous: Sequence[Mapping[str, Any]], current: Sequence[Condition],
                     generation: int, now: datetime) -> list[dict[str, Any]]:
    """Conditions in API form; lastTransitionTime changes only when the status changes."""
    before = {c.get("type"): c for c in previous}
    merged: list[dict[str, Any]] = []
    for condition in current:
        old = before.get(condition.type)
        changed = old is None or old.get("status") != condition.status
        merged.append({
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message[:32000],
            "observedGeneration": generation,
            "lastTransitionTime": timestamp(now) if changed or old is None
            else old.get("lastTransitionTime", timestamp(now)),
        })
    return merged


def endpoint(district: District, service: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Where the district connects: the load balancer's address, else the in-cluster name."""
    if service is None:
        return None
    spec = service.get("spec") or {}
    if spec.get("type") == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if not ingress:
            return None
        host = ingress[0].get("ip") or ingress[0].get("hostname")
        return {"host": host, "port": district.service.port} if host else None
    return {"host": f"{names.service(district.name)}.{district.namespace}.svc",
            "port": district.service.port}


def compute_status(district: District, observed: Observed, previous: Mapping[str, Any],
                   now: datetime) -> dict[str, Any]:
    """The whole status this reconcile should leave; equal to `previous` when nothing changed."""
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    parts = [
        _storage_condition(district, observed),
        _server_condition(district, observed),
        _keys_condition(district, observed),
        _job_condition(PROCESSING_HEALTHY, observed.processing_database, True,
                       before.get(PROCESSING_HEALTHY), "", ""),
        _job_condition(BACKUPS_HEALTHY, observed.backups_database,
                       district.backups.database is not None, before.get(BACKUPS_HEALTHY),
                       "NotConfigured", "no backups configured (spec.backups.databaseSecretRef)"),
        _uploads_condition(previous),
    ]
    conditions = [_ready_condition(parts, district), *parts]
    status: dict[str, Any] = dict(previous)
    status["observedGeneration"] = district.generation
    status["conditions"] = merge_conditions(list(before.values()), conditions,
                                            district.generation, now)
    where = endpoint(district, observed.service)
    status["endpoint"] = where
    status["hostKeys"] = [{"type": k.key_type, "fingerprint": k.fingerprint}
                          for k in observed.host_keys] or None
    status["knownHosts"] = (keys.known_hosts(where["host"], int(where["port"]), observed.host_keys)
                            if where and observed.host_keys else None)
    return {k: v for k, v in status.items() if v is not None}


def status_patch(previous: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `previous` into `desired` (empty when they are equal)."""
    patch: dict[str, Any] = {k: v for k, v in desired.items() if previous.get(k) != v}
    patch.update({k: None for k in previous if k not in desired})
    return patch


# ---- finished Jobs -----------------------------------------------------------------------

@dataclass(frozen=True)
class JobReport:
    """What a finished Job said, ready to merge into the status and to notify about."""

    job: str  # epochs | retention | backup
    outcome: str
    message: str
    result: Mapping[str, Any]


def last_termination(pods: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """From a Job's pods, oldest first: the newest termination message, and how that pod's
    container ended (the newest ended container's, when no pod left a message)."""
    ended: str | None = None
    for pod in reversed(pods):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if not terminated:
                continue
            how = (f"container {container.get('name')} ended {terminated.get('reason', '')} "
                   f"with exit code {terminated.get('exitCode')}")
            ended = ended or how
            if terminated.get("message") is not None:
                return terminated["message"], how
            break
    return None, ended


def parse_termination_message(job: str, message: str | None, succeeded: bool,
                              fallback: str) -> JobReport:
    """Read a job's one-line JSON result; anything else is a failure described by `fallback`."""
    try:
        result = json.loads(message or "")
        if not isinstance(result, dict) or "outcome" not in result:
            raise ValueError("no outcome")
    except ValueError:
        text = (message or "").strip().splitlines()
        detail = text[-1][:500] if text else fallback
        return JobReport(job=job, outcome="Succeeded" if succeeded else "Failed",
                         message=detail, result={})
    return JobReport(job=job, outcome=str(result["outcome"]),
                     message=str(result.get("message", "")), result=result)


def _newer(candidate: str | None, current: str | None) -> bool:
    return bool(candidate) and (not current or str(candidate) > str(current))


def apply_job_report(previous: Mapping[str, Any], report: JobReport, job_name: str,
                     generation: int, now: datetime) -> dict[str, Any]:
    """The status after taking in one finished Job's result."""
    status: dict[str, Any] = dict(previous)
    conditions = list(previous.get("conditions") or [])
    updates: list[Condition] = []
    result = report.result
    if report.job == names.JOB_EPOCHS:
        processed = [p for p in result.get("processed") or [] if isinstance(p, dict)]
        if processed:
            newest = max(processed, key=lambda p: str(p.get("processedAt", "")))
            current = (previous.get("lastEpoch") or {}).get("processedAt")
            if _newer(newest.get("processedAt"), current):
                status["lastEpoch"] = {k: newest[k] for k in
                                       ("name", "outcome", "format", "processedAt")
                                       if newest.get(k) is not None}
        if "unrecognized" in result:
            status["uploadsNeedingAttention"] = [str(e) for e in result.get("unrecognized") or []]
        healthy = report.outcome != "Failed"
        updates.append(Condition(PROCESSING_HEALTHY, "True" if healthy else "False",
                                 report.outcome if healthy else "JobFailed",
                                 f"job {job_name}: {report.message or report.outcome}"))
        updates.append(_uploads_condition(status))
    elif report.job == names.JOB_BACKUP:
        if report.outcome == "Succeeded":
            if _newer(result.get("completedAt"), (previous.get("lastBackup") or {})
                      .get("completedAt")):
                status["lastBackup"] = {k: result[k] for k in
                                        ("file", "bytes", "sha256", "completedAt")
                                        if result.get(k) is not None}
            updates.append(Condition(BACKUPS_HEALTHY, "True", "BackupSucceeded",
                                     f"job {job_name}: {report.message or 'backup written'}"))
        else:
            updates.append(Condition(BACKUPS_HEALTHY, "False", "BackupFailed",
                                     f"job {job_name}: {report.message or 'backup failed'}"))
    elif report.job == names.JOB_RETENTION:
        status["lastRetention"] = {"outcome": report.outcome,
                                   "deleted": len(result.get("deleted") or []),
                                   "completedAt": timestamp(now)}
    replaced = {c.type for c in updates}
    kept = [c for c in conditions if c.get("type") not in replaced]
    status["conditions"] = kept + merge_conditions(
        [c for c in conditions if c.get("type") in replaced], updates, generation, now)
    status["conditions"].sort(key=lambda c: CONDITION_ORDER.index(c["type"])
                              if c["type"] in CONDITION_ORDER else len(CONDITION_ORDER))
    return status


@dataclass(frozen=True)
class Transition:
    """A condition that changed status or reason: worth an Event."""

    type: str
    status: str
    reason: str
    message: str

    @property
    def warning(self) -> bool:
        bad = "True" if self.type in ABNORMAL_TRUE else "False"
        return self.status == bad


def transitions(previous: Sequence[Mapping[str, Any]],
                current: Sequence[Mapping[str, Any]]) -> list[Transition]:
    before = {c.get("type"): c for c in previous}
    changed: list[Transition] = []
    for c in current:
        old = before.get(c["type"])
        if old is None or old.get("status") != c["status"] or old.get("reason") != c["reason"]:
            change = Transition(c["type"], c["status"], c["reason"], c["message"])
            # A new District starts with every condition: only bad news a person can act on is
            # worth an Event (a volume or a pod still coming up is not).
            if old is None and (not change.warning or change.type in (STORAGE_READY,
                                                                       SERVER_READY)):
                continue
            changed.append(change)
    return changed
