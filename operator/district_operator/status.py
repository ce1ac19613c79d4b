"""District status, computed purely: API-convention conditions, endpoint, host keys, job results."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from district_contract import results
from district_contract.results import (
    BackupResult,
    DocviewerResult,
    EpochsResult,
    JobKind,
    JobResult,
    Outcome,
    PdfsResult,
    PullResult,
    RetentionResult,
)

from district_operator import keys, names
from district_operator.conditions import (
    ABNORMAL_TRUE,
    CLAIM_PHASES,
    DOWNLOAD_FAILED_REASONS,
    EPOCHS_OUTCOME_REASONS,
    INFORMATIONAL,
    JOB_REASONS,
    KEYS_LOCK_OUT,
    NOT_READY,
    ConditionType,
    Reason,
)
from district_operator.model import District
from district_operator.rotation import RotationState

CONDITION_ORDER: tuple[ConditionType, ...] = tuple(ConditionType)
# Where status timestamps come from (tests pass a fixed one).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def shifted_clock(offset_seconds: float) -> Clock:
    """The real clock moved by an offset (--clock-offset: drills and tests of expectEvery)."""
    if not offset_seconds:
        return utc_now
    return lambda: utc_now() + timedelta(seconds=offset_seconds)


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: str  # "True" | "False" | "Unknown"
    reason: Reason
    message: str


@dataclass(frozen=True)
class SecretProblem:
    """Why a Secret the District names cannot be used."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class GatewaySeen:
    """The shared SSH gateway as a shared-mode District's status shows it (docs/gateway.md):
    its Service's load balancer address and its host keys. `installed` False: the operator
    was given no gateway, so there is nothing to show."""

    installed: bool = False
    endpoint: Mapping[str, Any] | None = None  # {host, port}, once the load balancer has one
    host_keys: tuple[keys.HostKey, ...] = ()
    next_host_keys: tuple[keys.HostKey, ...] = ()
    rotation: RotationState | None = None


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
    # spec.downloads.docviewer.tokenSecretRef (the database is processing's, above)
    downloads_token: SecretProblem | None = None
    pull_secrets: SecretProblem | None = None  # spec.integration.sif's Secrets
    apply_errors: dict[str, str] = field(default_factory=dict)
    # The host keys' rotation: the next keys while one is in flight, and its state; and
    # whether the host-key Secret is gone (then the status keeps the keys it last published).
    next_host_keys: tuple[keys.HostKey, ...] = ()
    rotation: RotationState | None = None
    host_keys_missing: bool = False
    # spec.service.mode shared: the gateway districts connect through; None: dedicated.
    gateway: GatewaySeen | None = None
    # Routed as the gateway's routing table has it (None: not in shared mode)
    routed: Condition | None = None


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _keys_condition(district: District, observed: Observed) -> Condition:
    kind = ConditionType.KEYS_VALID
    if observed.keys_problem is not None:
        return Condition(kind, "False", observed.keys_problem.reason,
                         observed.keys_problem.message)
    check = observed.key_check or keys.KeyCheck((), ())
    if check.rejected:
        bad = "; ".join(f"{r.source}: {r.reason}" for r in check.rejected)
        reason = Reason.INVALID_KEYS if check.accepted else Reason.NO_VALID_KEYS
        return Condition(kind, "False", reason,
                         f"{len(check.rejected)} key(s) rejected and left out ({bad}); "
                         f"{len(check.accepted)} valid key(s) in use")
    if not check.accepted and not district.suspend:
        return Condition(kind, "False", Reason.NO_VALID_KEYS,
                         "no authorized key: nobody can log in")
    return Condition(kind, "True", Reason.KEYS_VALID, f"{len(check.accepted)} valid key(s) in use")


def _storage_condition(district: District, observed: Observed) -> Condition:
    kind = ConditionType.STORAGE_READY
    if "PersistentVolumeClaim" in observed.apply_errors:
        return Condition(kind, "False", Reason.STORAGE_UPDATE_REFUSED,
                         observed.apply_errors["PersistentVolumeClaim"])
    pvc = observed.pvc
    if pvc is None:
        return Condition(kind, "False", Reason.NOT_CREATED, "the data volume claim is missing")
    phase = (pvc.get("status") or {}).get("phase", "Pending")
    claim = names.data_pvc(district.name)
    if phase != "Bound":
        return Condition(kind, "False", CLAIM_PHASES.get(phase, Reason.NOT_BOUND),
                         f"volume claim {claim} is {phase}: waiting for a volume")
    capacity = ((pvc.get("status") or {}).get("capacity") or {}).get("storage")
    requested = pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
    if capacity and requested and capacity != requested:
        return Condition(kind, "True", Reason.RESIZING,
                         f"volume claim {claim} is bound; resizing from {capacity} to {requested}")
    return Condition(kind, "True", Reason.BOUND, f"volume claim {claim} is bound")


def _server_condition(district: District, observed: Observed) -> Condition:
    kind = ConditionType.SERVER_READY
    if "Deployment" in observed.apply_errors:
        return Condition(kind, "False", Reason.APPLY_FAILED, observed.apply_errors["Deployment"])
    if district.suspend:
        return Condition(kind, "False", Reason.SUSPENDED,
                         "the District is suspended: logins are refused, data is kept")
    deployment = observed.deployment
    if deployment is None:
        return Condition(kind, "False", Reason.NOT_CREATED, "the SFTP server is not created")
    status = deployment.get("status") or {}
    if int(status.get("availableReplicas") or 0) >= 1:
        return Condition(kind, "True", Reason.AVAILABLE, "the SFTP server accepts connections")
    # A fixed message: the Deployment's own wording changes with every controller update, and
    # each change would be one more status write.
    return Condition(kind, "False", Reason.UNAVAILABLE,
                     "the SFTP server is not ready yet (see its Deployment and pod)")


def _job_condition(kind: ConditionType, problem: SecretProblem | None,
                   previous: Mapping[str, Any] | None) -> Condition:
    if problem is not None:
        return Condition(kind, "False", problem.reason, problem.message)
    if previous is not None and previous.get("reason") in JOB_REASONS:
        return Condition(kind, str(previous["status"]), Reason(previous["reason"]),
                         str(previous.get("message", "")))
    return Condition(kind, "Unknown", Reason.NO_RUN_YET, "no job has finished yet")


def _backups_condition(district: District, observed: Observed,
                       previous: Mapping[str, Any] | None) -> Condition:
    if district.backups.database is None:
        return Condition(ConditionType.BACKUPS_HEALTHY, "True", Reason.NOT_CONFIGURED,
                         "no backups configured (spec.backups.databaseSecretRef)")
    return _job_condition(ConditionType.BACKUPS_HEALTHY, observed.backups_database, previous)


# ---- DownloadsHealthy: the docviewer and pdfs jobs (spec.downloads) -------------------------

# Where each download job's last run is kept in the status.
DOWNLOAD_STATUS_FIELDS: dict[JobKind, str] = {JobKind.DOCVIEWER: "lastDocviewer",
                                              JobKind.PDFS: "lastPdfs"}
# DownloadsHealthy reasons that come from the jobs' runs, not from the District's setup.
_DOWNLOAD_RUN_REASONS = frozenset({Reason.DOWNLOADS_SUCCEEDED, Reason.DOCVIEWER_FAILED,
                                   Reason.PDFS_FAILED, Reason.NO_RUN_YET})


def configured_downloads(district: District) -> tuple[JobKind, ...]:
    """The download jobs spec.downloads turns on."""
    return tuple(kind for kind, block in ((JobKind.DOCVIEWER, district.downloads.docviewer),
                                          (JobKind.PDFS, district.downloads.pdfs))
                 if block is not None)


def _downloads_from_runs(kinds: Sequence[JobKind], status: Mapping[str, Any]) -> Condition:
    """From the last run of each configured download job: any failure is bad news."""
    kind = ConditionType.DOWNLOADS_HEALTHY
    runs = {job: status[DOWNLOAD_STATUS_FIELDS[job]] for job in kinds
            if status.get(DOWNLOAD_STATUS_FIELDS[job])}
    failed = [job for job in kinds if job in runs and runs[job].get("outcome") == Outcome.FAILED]
    if failed:
        return Condition(kind, "False", DOWNLOAD_FAILED_REASONS[failed[0]], "; ".join(
            f"{job} job {runs[job].get('job', '')}: {runs[job].get('message') or 'failed'}"
            for job in failed))
    if not runs:
        return Condition(kind, "Unknown", Reason.NO_RUN_YET, "no download job has finished yet")
    said = []
    for job in kinds:
        run = runs.get(job)
        said.append(f"{job}: epoch {run.get('epoch') or '(none)'} published "
                    f"{run.get('completedAt', '')}" if run else f"{job}: no run yet")
    return Condition(kind, "True", Reason.DOWNLOADS_SUCCEEDED, "; ".join(said))


def _downloads_condition(district: District, observed: Observed,
                         status: Mapping[str, Any]) -> Condition:
    kind = ConditionType.DOWNLOADS_HEALTHY
    kinds = configured_downloads(district)
    if not kinds:
        return Condition(kind, "True", Reason.NOT_CONFIGURED,
                         "no downloads configured (spec.downloads.docviewer, .pdfs)")
    if district.processing.database is None:
        return Condition(kind, "False", Reason.NO_DATABASE,
                         "spec.downloads reads the documents from the district's database: set "
                         "spec.processing.databaseSecretRef")
    for problem in (observed.processing_database, observed.downloads_token):
        if problem is not None:
            return Condition(kind, "False", problem.reason, problem.message)
    return _downloads_from_runs(kinds, status)


def _status_time(text: str, fallback: datetime | None) -> str:
    """A job's time as the status writes times (the CRD's date-time); what a job wrote that
    is not a time with a zone becomes `fallback` (or "", left out), so it cannot make the API
    server refuse the whole status."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        return timestamp(fallback) if fallback is not None else ""
    return timestamp(moment.astimezone(UTC))


def _count(value: int) -> int:
    """A job's count within the CRD's int64 (the API server refuses the status otherwise)."""
    return max(0, min(value, 2**63 - 1))


def _download_status(status: dict[str, Any], previous: Mapping[str, Any],
                     report: JobReport, job_name: str, now: datetime) -> None:
    """The job's last run: outcome, when, why; the published epoch kept from the last success."""
    field_name = DOWNLOAD_STATUS_FIELDS[report.job]
    last = dict(previous.get(field_name) or {})
    result = report.result
    completed = _status_time(getattr(result, "completed_at", ""), now)
    if last.get("completedAt") and str(last["completedAt"]) > completed:
        return  # an older run recorded late: the newer one stays
    last.update({"outcome": str(report.outcome), "job": job_name, "completedAt": completed,
                 "message": report.message[:1000]})
    if isinstance(result, DocviewerResult) and not report.failed:
        last.update({"epoch": result.epoch, "rows": _count(result.rows),
                     "bytes": _count(result.bytes),
                     "tokenExpiresAt": _status_time(result.token_expires_at, None)})
    elif isinstance(result, PdfsResult) and not report.failed:
        last.update({"epoch": result.epoch, "documents": _count(result.documents),
                     "bytes": _count(result.bytes), "skipped": len(result.skipped)})
    status[field_name] = {k: v for k, v in last.items() if v != ""}


def _pull_condition(district: District, observed: Observed,
                    previous: Mapping[str, Any] | None) -> Condition:
    if district.integration.pull is None:
        return Condition(ConditionType.PULL_HEALTHY, "True", Reason.NOT_CONFIGURED,
                         "push mode: the district uploads over SFTP (spec.integration.mode)")
    return _job_condition(ConditionType.PULL_HEALTHY, observed.pull_secrets, previous)


def _uploads_condition(status: Mapping[str, Any]) -> Condition:
    kind = ConditionType.UPLOADS_NEED_ATTENTION
    waiting = list(status.get("uploadsNeedingAttention") or [])
    if waiting:
        return Condition(kind, "True", Reason.UNRECOGNIZED_UPLOADS,
                         f"{len(waiting)} upload(s) in /upload/ were not recognized and wait "
                         f"for staff: {', '.join(waiting[:10])}")
    return Condition(kind, "False", Reason.NONE_WAITING, "no unrecognized uploads are waiting")


def _host_keys_condition(district: District, observed: Observed) -> Condition:
    kind = ConditionType.HOST_KEYS_READY
    secret = names.host_keys_secret(district.name)
    if observed.host_keys_missing:
        return Condition(kind, "False", Reason.HOST_KEYS_SECRET_MISSING,
                         f"the host-key Secret {secret} was deleted; it is not regenerated, "
                         "since new keys would make every district's client refuse the "
                         "server: restore it from your copy, or raise spec.hostKeys.rotate to "
                         "accept new keys (docs/operations.md, lost host keys)")
    return Condition(kind, "True", Reason.HOST_KEYS_PRESENT,
                     f"the host keys are in Secret {secret}")


def _rotation_condition(observed: Observed, previous: Mapping[str, Any] | None) -> Condition:
    kind = ConditionType.HOST_KEYS_ROTATING
    rotation = observed.rotation
    if rotation is None:  # the Secret is missing: what was said last still holds
        if previous is not None and previous.get("reason"):
            return Condition(kind, str(previous["status"]), Reason(previous["reason"]),
                             str(previous.get("message", "")))
        return Condition(kind, "False", Reason.NO_ROTATION, "no host key rotation has run")
    if rotation.in_flight:
        until = rotation.promote_at.strftime("%Y-%m-%dT%H:%M:%SZ") \
            if rotation.promote_at else "?"
        fingerprints = ", ".join(f"{k.key_type} {k.fingerprint}"
                                 for k in observed.next_host_keys)
        queued = (f"; rotation {rotation.queued} starts when this one completes"
                  if rotation.queued is not None else "")
        return Condition(kind, "True", Reason.NEXT_KEYS_ANNOUNCED,
                         f"rotation {rotation.rotation}: the next host keys ({fingerprints}) "
                         f"are announced to clients after login and replace the current ones "
                         f"at {until}{queued}")
    if rotation.completed_at is not None:
        return Condition(kind, "False", Reason.NEXT_KEYS_PROMOTED,
                         f"rotation {rotation.rotation} completed at "
                         f"{rotation.completed_at.strftime('%Y-%m-%dT%H:%M:%SZ')}: the "
                         "new host keys are in use and the old ones are dropped")
    return Condition(kind, "False", Reason.NO_ROTATION, "no host key rotation has run")


def _routed_condition(observed: Observed) -> Condition:
    if observed.routed is not None:
        return observed.routed
    return Condition(ConditionType.ROUTED, "True", Reason.DEDICATED,
                     "spec.service.mode is dedicated: districts connect to the District's own "
                     "Service, no gateway involved")


def _ready_condition(parts: Sequence[Condition], district: District) -> Condition:
    if district.suspend:
        return Condition(ConditionType.READY, "False", Reason.SUSPENDED,
                         "the District is suspended")
    by_type = {c.type: c for c in parts}
    problems = [c for c in (by_type[ConditionType.STORAGE_READY],
                            by_type[ConditionType.SERVER_READY]) if c.status != "True"]
    if by_type[ConditionType.KEYS_VALID].reason in KEYS_LOCK_OUT:
        problems.append(by_type[ConditionType.KEYS_VALID])
    problems += [c for c in (by_type[ConditionType.PROCESSING_HEALTHY],
                             by_type[ConditionType.BACKUPS_HEALTHY],
                             by_type[ConditionType.DOWNLOADS_HEALTHY],
                             by_type[ConditionType.PULL_HEALTHY]) if c.status == "False"]
    host_keys = by_type.get(ConditionType.HOST_KEYS_READY)
    if host_keys is not None and host_keys.status == "False":
        problems.append(host_keys)
    routed = by_type.get(ConditionType.ROUTED)
    if routed is not None and routed.status == "False":
        problems.append(routed)
    if not problems:
        return Condition(ConditionType.READY, "True", Reason.READY,
                         "the district can log in and its jobs are healthy")
    return Condition(ConditionType.READY, "False", NOT_READY[problems[0].type],
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
            "type": str(condition.type),
            "status": condition.status,
            "reason": str(condition.reason),
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
        host = load_balancer_host(service)
        return {"host": host, "port": district.service.port} if host else None
    return {"host": f"{names.service(district.name)}.{district.namespace}.svc",
            "port": district.service.port}


def load_balancer_host(service: Mapping[str, Any]) -> str | None:
    """The first address a load balancer gave a Service (IP, else host name), or None yet."""
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if not ingress:
        return None
    host = ingress[0].get("ip") or ingress[0].get("hostname")
    return str(host) if host else None


def gateway_endpoint(service: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The gateway Service's public address and SSH port (its port named ssh, else its first),
    once its load balancer has one."""
    if service is None:
        return None
    host = load_balancer_host(service)
    ports = (service.get("spec") or {}).get("ports") or []
    port = next((p for p in ports if p.get("name") == names.PORT_NAME_SSH),
                ports[0] if ports else None)
    if not host or port is None or not port.get("port"):
        return None
    return {"host": host, "port": int(port["port"])}


def _endpoint_status(district: District, observed: Observed) -> dict[str, Any] | None:
    """status.endpoint: where, the user name to give (the District's login), and the mode."""
    if observed.gateway is None:
        where = endpoint(district, observed.service)
        mode = "dedicated"
    else:
        where = dict(observed.gateway.endpoint) if observed.gateway.endpoint else None
        mode = "shared"
    if where is None:
        return None
    return {**where, "user": district.login, "mode": mode}


def compute_status(district: District, observed: Observed, previous: Mapping[str, Any],
                   now: datetime) -> dict[str, Any]:
    """The whole status this reconcile should leave; equal to `previous` when nothing changed."""
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    parts = [
        _storage_condition(district, observed),
        _server_condition(district, observed),
        _keys_condition(district, observed),
        _job_condition(ConditionType.PROCESSING_HEALTHY, observed.processing_database,
                       before.get(ConditionType.PROCESSING_HEALTHY)),
        _backups_condition(district, observed, before.get(ConditionType.BACKUPS_HEALTHY)),
        _downloads_condition(district, observed, previous),
        _pull_condition(district, observed, before.get(ConditionType.PULL_HEALTHY)),
        _uploads_condition(previous),
        uploads_overdue_condition(district, previous, now),
        _host_keys_condition(district, observed),
        _rotation_condition(observed, before.get(ConditionType.HOST_KEYS_ROTATING)),
        _routed_condition(observed),
    ]
    conditions = [_ready_condition(parts, district), *parts]
    status: dict[str, Any] = dict(previous)
    status["observedGeneration"] = district.generation
    status["conditions"] = merge_conditions(list(before.values()), conditions,
                                            district.generation, now)
    where = _endpoint_status(district, observed)
    status["endpoint"] = where
    if observed.gateway is not None:
        # What clients see is the gateway: its keys, its rotation (the District's own keys
        # only guard the gateway's leg to the server, and HostKeysReady/-Rotating still
        # tell of them).
        gateway = observed.gateway
        _host_keys_status(status, Observed(host_keys=gateway.host_keys,
                                           next_host_keys=gateway.next_host_keys,
                                           rotation=gateway.rotation), where)
    elif not observed.host_keys_missing:
        _host_keys_status(status, observed, where)
    return {k: v for k, v in status.items() if v is not None}


def _host_keys_status(status: dict[str, Any], observed: Observed,
                      where: Mapping[str, Any] | None) -> None:
    """hostKeys (current), nextHostKeys and the rotation, and knownHosts listing both, so that
    a client set up during a rotation trusts the keys of both sides of it."""
    status["hostKeys"] = [{"type": k.key_type, "fingerprint": k.fingerprint}
                          for k in observed.host_keys] or None
    status["nextHostKeys"] = [{"type": k.key_type, "fingerprint": k.fingerprint}
                              for k in observed.next_host_keys] or None
    status["hostKeyRotation"] = observed.rotation.status() \
        if observed.rotation is not None and (observed.rotation.rotation
                                              or observed.rotation.in_flight) else None
    published = observed.host_keys + observed.next_host_keys
    status["knownHosts"] = (keys.known_hosts(where["host"], int(where["port"]), published)
                            if where and published else None)


# ---- missed uploads (spec.processing.expectEvery) -------------------------------------------

def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration_text(seconds: int) -> str:
    """26h, 1h30m, 90s: the way the spec writes a duration."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s"))
                   if n) or "0s"


def uploads_overdue_condition(district: District, status: Mapping[str, Any],
                              now: datetime) -> Condition:
    """UploadsOverdue: True once no epoch has been processed for spec.processing.expectEvery,
    counted from status.lastEpoch.processedAt, or from the District's creation before any.

    The messages name fixed times, never "for N hours": a resync that finds nothing new must
    leave the status as it was (no write).
    """
    kind = ConditionType.UPLOADS_OVERDUE
    every = district.processing.expect_every_seconds
    if every is None:
        return Condition(kind, "False", Reason.NOT_EXPECTED,
                         "spec.processing.expectEvery is not set: no upload is expected")
    if district.suspend:
        return Condition(kind, "False", Reason.SUSPENDED,
                         "the District is suspended: no upload is expected")
    last_epoch = status.get("lastEpoch") or {}
    last = _parse_time(last_epoch.get("processedAt"))
    since = last or _parse_time(district.created_at)
    if since is None:  # an object that never came from an API server
        return Condition(kind, "False", Reason.ON_SCHEDULE, "no time to count from")
    due = since + timedelta(seconds=every)
    expected = f"expected every {duration_text(every)}"
    if now < due:
        what = (f"the last upload was processed at {timestamp(last)}" if last
                else f"no upload yet since the District was created at {timestamp(since)}")
        return Condition(kind, "False", Reason.ON_SCHEDULE,
                         f"{what}; {expected}, the next by {timestamp(due)}")
    if last is None:
        return Condition(kind, "True", Reason.NEVER_UPLOADED,
                         f"no upload has been processed since the District was created at "
                         f"{timestamp(since)} ({expected}): overdue since {timestamp(due)}")
    return Condition(kind, "True", Reason.OVERDUE,
                     f"no upload processed since {timestamp(last)} (epoch "
                     f"{last_epoch.get('name', '?')}; {expected}): overdue since "
                     f"{timestamp(due)}")


def refresh_uploads_overdue(status: Mapping[str, Any], district: District,
                            now: datetime) -> dict[str, Any]:
    """The status with UploadsOverdue recomputed (after a Job's result moved lastEpoch)."""
    updated = dict(status)
    conditions = list(status.get("conditions") or [])
    kind = ConditionType.UPLOADS_OVERDUE
    old = [c for c in conditions if c.get("type") == kind]
    merged = merge_conditions(old, [uploads_overdue_condition(district, status, now)],
                              district.generation, now)
    updated["conditions"] = [c for c in conditions if c.get("type") != kind] + merged
    updated["conditions"].sort(key=lambda c: CONDITION_ORDER.index(c["type"])
                               if c["type"] in CONDITION_ORDER else len(CONDITION_ORDER))
    return updated


def overdue_episode_started(previous: Mapping[str, Any], desired: Mapping[str, Any]
                            ) -> Mapping[str, Any] | None:
    """UploadsOverdue as it turned True between two statuses, None when it did not: the
    status itself keeps the episode, so a resync or an operator restart never starts it again."""
    def overdue(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return next((c for c in status.get("conditions") or []
                     if c.get("type") == ConditionType.UPLOADS_OVERDUE
                     and c.get("status") == "True"), None)
    return overdue(desired) if overdue(previous) is None else None


def status_patch(previous: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `previous` into `desired` (empty when they are equal)."""
    patch: dict[str, Any] = {k: v for k, v in desired.items() if previous.get(k) != v}
    patch.update({k: None for k in previous if k not in desired})
    return patch


# ---- finished Jobs -----------------------------------------------------------------------

@dataclass(frozen=True)
class JobReport:
    """What a finished Job said, ready to merge into the status and to notify about."""

    job: JobKind
    outcome: Outcome
    message: str
    # The job's typed result; None when it left none that could be read.
    result: JobResult | None = None

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED


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


def parse_termination_message(job_name: str, message: str | None, succeeded: bool,
                              fallback: str) -> JobReport:
    """Read a job's one-line result (the contract's); anything else is described by `fallback`
    or the message's last line, and counts as the Job controller's verdict."""
    job = JobKind(job_name)
    unread = Outcome.SUCCEEDED if succeeded else Outcome.FAILED
    lines = (message or "").strip().splitlines()
    if not lines:
        return JobReport(job=job, outcome=unread, message=fallback)
    try:
        result = results.parse(lines[-1])
    except results.ResultError as exc:
        # A log tail (FallbackToLogsOnError) says more than "not JSON"; a JSON line that is not
        # a result says what is wrong with it.
        detail = lines[-1][:500] if not lines[-1].lstrip().startswith("{") else \
            f"the job's result cannot be read: {exc}"[:500]
        return JobReport(job=job, outcome=unread, message=detail)
    if result.kind != job:
        return JobReport(job=job, outcome=unread,
                         message=f"the {job} job left a {result.kind} result")
    return JobReport(job=job, outcome=result.outcome, message=result.message, result=result)


def _newer(candidate: str | None, current: str | None) -> bool:
    return bool(candidate) and (not current or str(candidate) > str(current))


def _epochs_status(status: dict[str, Any], previous: Mapping[str, Any],
                   result: EpochsResult) -> None:
    if result.processed:
        newest = max(result.processed, key=lambda p: p.processed_at or "")
        current = (previous.get("lastEpoch") or {}).get("processedAt")
        if _newer(newest.processed_at, current):
            last = {"name": newest.name, "outcome": newest.outcome, "format": newest.format,
                    "processedAt": newest.processed_at}
            status["lastEpoch"] = {k: v for k, v in last.items() if v is not None}
    # A result shortened to fit the termination message may have lost the list: keep the last.
    if result.unrecognized or not result.truncated:
        status["uploadsNeedingAttention"] = list(result.unrecognized)


def _backup_status(status: dict[str, Any], previous: Mapping[str, Any],
                   result: BackupResult) -> None:
    if _newer(result.completed_at, (previous.get("lastBackup") or {}).get("completedAt")):
        status["lastBackup"] = {"file": result.file, "bytes": result.bytes,
                                "sha256": result.sha256, "completedAt": result.completed_at}


def _pull_status(status: dict[str, Any], previous: Mapping[str, Any], report: JobReport,
                 now: datetime) -> None:
    result = report.result if isinstance(report.result, PullResult) else None
    completed = (result.completed_at if result is not None else "") or timestamp(now)
    if not _newer(completed, (previous.get("lastPull") or {}).get("completedAt")):
        return  # a Job recorded late must not hide a newer pull
    # Every key every time: the status is written as a JSON merge patch, which would keep a
    # key of the previous pull (a failure's reason) that this one left out.
    status["lastPull"] = {
        "outcome": str(report.outcome),
        "reason": result.reason if result is not None else "",
        "message": report.message[:1000],
        "epoch": result.epoch if result is not None else "",
        "objects": list(result.objects) if result is not None else [],
        "messages": result.messages if result is not None else 0,
        "packets": result.packets if result is not None else 0,
        "completedAt": completed,
    }


def _pull_report_condition(report: JobReport, job_name: str) -> Condition:
    if report.failed:
        result = report.result
        why = f" ({result.reason})" if result is not None and result.reason else ""
        return Condition(ConditionType.PULL_HEALTHY, "False", Reason.PULL_FAILED,
                         f"job {job_name}: {report.message or 'the pull failed'}{why}")
    return Condition(ConditionType.PULL_HEALTHY, "True", Reason.PULL_SUCCEEDED,
                     f"job {job_name}: {report.message or report.outcome}")


def apply_job_report(previous: Mapping[str, Any], report: JobReport, job_name: str,
                     generation: int, now: datetime,
                     district: District | None = None) -> dict[str, Any]:
    """The status after taking in one finished Job's result (`district` says which download
    jobs are configured; without it, those with a recorded run)."""
    status: dict[str, Any] = dict(previous)
    conditions = list(previous.get("conditions") or [])
    updates: list[Condition] = []
    result = report.result
    if report.job is JobKind.EPOCHS:
        if isinstance(result, EpochsResult):
            _epochs_status(status, previous, result)
        updates.append(Condition(ConditionType.PROCESSING_HEALTHY,
                                 "False" if report.failed else "True",
                                 EPOCHS_OUTCOME_REASONS[report.outcome],
                                 f"job {job_name}: {report.message or report.outcome}"))
        updates.append(_uploads_condition(status))
    elif report.job is JobKind.BACKUP:
        if report.failed:
            updates.append(Condition(ConditionType.BACKUPS_HEALTHY, "False",
                                     Reason.BACKUP_FAILED,
                                     f"job {job_name}: {report.message or 'backup failed'}"))
        else:
            if isinstance(result, BackupResult):
                _backup_status(status, previous, result)
            updates.append(Condition(ConditionType.BACKUPS_HEALTHY, "True",
                                     Reason.BACKUP_SUCCEEDED,
                                     f"job {job_name}: {report.message or 'backup written'}"))
    elif report.job is JobKind.PULL:
        _pull_status(status, previous, report, now)
        updates.append(_pull_report_condition(report, job_name))
    elif report.job is JobKind.RETENTION:
        deleted = len(result.deleted) if isinstance(result, RetentionResult) else 0
        status["lastRetention"] = {"outcome": str(report.outcome), "deleted": deleted,
                                   "completedAt": timestamp(now)}
    elif report.job in DOWNLOAD_STATUS_FIELDS:
        _download_status(status, previous, report, job_name, now)
        updates += _downloads_update(status, previous, district)
    replaced = {c.type for c in updates}
    kept = [c for c in conditions if c.get("type") not in replaced]
    status["conditions"] = kept + merge_conditions(
        [c for c in conditions if c.get("type") in replaced], updates, generation, now)
    status["conditions"].sort(key=lambda c: CONDITION_ORDER.index(c["type"])
                              if c["type"] in CONDITION_ORDER else len(CONDITION_ORDER))
    return status


def _downloads_update(status: Mapping[str, Any], previous: Mapping[str, Any],
                      district: District | None) -> list[Condition]:
    """DownloadsHealthy after a download job's run, unless a setup problem (a missing Secret)
    holds it: that is the reconcile's to clear, and a run must not make it flap."""
    held = next((c for c in previous.get("conditions") or []
                 if c.get("type") == ConditionType.DOWNLOADS_HEALTHY), None)
    if held is not None and held.get("status") == "False" \
            and held.get("reason") not in _DOWNLOAD_RUN_REASONS:
        return []
    kinds = configured_downloads(district) if district is not None else tuple(
        job for job, field_name in DOWNLOAD_STATUS_FIELDS.items() if status.get(field_name))
    return [_downloads_from_runs(kinds, status)] if kinds else []


@dataclass(frozen=True)
class Transition:
    """A condition that changed status or reason: worth an Event."""

    type: str
    status: str
    reason: str
    message: str

    @property
    def warning(self) -> bool:
        if self.type in INFORMATIONAL:
            return False
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
            if old is None and (not change.warning or change.type in (
                    ConditionType.STORAGE_READY, ConditionType.SERVER_READY)):
                continue
            # A new shared-mode District's entry written as expected is no news either.
            if old is not None and old.get("reason") == Reason.PUBLISHING and \
                    change.status == "True":
                continue
            changed.append(change)
    return changed
