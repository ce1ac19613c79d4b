"""The District's condition types and reasons: every value its status conditions can carry."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from district_contract.results import JobKind, Outcome


class ConditionType(StrEnum):
    """The condition types, in the order the status lists them."""

    READY = "Ready"
    STORAGE_READY = "StorageReady"
    SERVER_READY = "ServerReady"
    KEYS_VALID = "KeysValid"
    PROCESSING_HEALTHY = "ProcessingHealthy"
    BACKUPS_HEALTHY = "BackupsHealthy"
    DOWNLOADS_HEALTHY = "DownloadsHealthy"
    PULL_HEALTHY = "PullHealthy"
    UPLOADS_NEED_ATTENTION = "UploadsNeedAttention"
    UPLOADS_OVERDUE = "UploadsOverdue"
    # The host keys (docs/operator.md, host key rotation)
    HOST_KEYS_READY = "HostKeysReady"
    HOST_KEYS_ROTATING = "HostKeysRotating"
    # spec.service.mode shared: the District's routing entry is at the gateway (docs/gateway.md)
    ROUTED = "Routed"


class Reason(StrEnum):
    """Every condition reason (CamelCase, for programs); docs/operator.md lists them per type."""

    # Ready
    READY = "Ready"
    SUSPENDED = "Suspended"
    STORAGE_NOT_READY = "StorageNotReady"
    SERVER_NOT_READY = "ServerNotReady"
    KEYS_NOT_READY = "KeysNotReady"
    PROCESSING_NOT_READY = "ProcessingNotReady"
    BACKUPS_NOT_READY = "BackupsNotReady"
    DOWNLOADS_NOT_READY = "DownloadsNotReady"
    # StorageReady (Pending and Lost are the claim's own phases)
    BOUND = "Bound"
    RESIZING = "Resizing"
    PENDING = "Pending"
    LOST = "Lost"
    NOT_BOUND = "NotBound"
    NOT_CREATED = "NotCreated"
    STORAGE_UPDATE_REFUSED = "StorageUpdateRefused"
    # ServerReady
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"
    APPLY_FAILED = "ApplyFailed"
    # KeysValid
    KEYS_VALID = "KeysValid"
    INVALID_KEYS = "InvalidKeys"
    NO_VALID_KEYS = "NoValidKeys"
    KEYS_SECRET_NOT_FOUND = "KeysSecretNotFound"  # noqa: S105 - a reason, not a password
    KEYS_SECRET_KEY_MISSING = "KeysSecretKeyMissing"  # noqa: S105
    # ProcessingHealthy and BackupsHealthy
    SUCCEEDED = "Succeeded"
    NOTHING_TO_DO = "NothingToDo"
    NEEDS_ATTENTION = "NeedsAttention"
    JOB_FAILED = "JobFailed"
    BACKUP_SUCCEEDED = "BackupSucceeded"
    BACKUP_FAILED = "BackupFailed"
    NOT_CONFIGURED = "NotConfigured"
    NO_RUN_YET = "NoRunYet"
    NO_DATABASE = "NoDatabase"
    DATABASE_SECRET_NOT_FOUND = "DatabaseSecretNotFound"  # noqa: S105
    DATABASE_SECRET_KEY_MISSING = "DatabaseSecretKeyMissing"  # noqa: S105
    DATABASE_SECRET_INVALID = "DatabaseSecretInvalid"  # noqa: S105
    # DownloadsHealthy (also NotConfigured, NoRunYet, NoDatabase and the DatabaseSecret* ones)
    DOWNLOADS_SUCCEEDED = "DownloadsSucceeded"
    DOCVIEWER_FAILED = "DocviewerFailed"
    PDFS_FAILED = "PdfsFailed"
    TOKEN_SECRET_NOT_FOUND = "TokenSecretNotFound"  # noqa: S105
    TOKEN_SECRET_KEY_MISSING = "TokenSecretKeyMissing"  # noqa: S105
    # PullHealthy (spec.integration.mode pull; NotConfigured and NoRunYet as above)
    PULL_NOT_READY = "PullNotReady"  # Ready's reason
    PULL_SUCCEEDED = "PullSucceeded"
    PULL_FAILED = "PullFailed"
    SIF_AUTH_SECRET_NOT_FOUND = "SifAuthSecretNotFound"  # noqa: S105
    SIF_AUTH_SECRET_INVALID = "SifAuthSecretInvalid"  # noqa: S105
    SIF_CA_SECRET_NOT_FOUND = "SifCaSecretNotFound"  # noqa: S105
    SIF_CA_SECRET_KEY_MISSING = "SifCaSecretKeyMissing"  # noqa: S105
    # UploadsNeedAttention
    UNRECOGNIZED_UPLOADS = "UnrecognizedUploads"
    NONE_WAITING = "NoneWaiting"
    # UploadsOverdue (spec.processing.expectEvery); Suspended above when the District is
    OVERDUE = "Overdue"
    NEVER_UPLOADED = "NeverUploaded"
    ON_SCHEDULE = "OnSchedule"
    NOT_EXPECTED = "NotExpected"
    # HostKeysReady (and Ready's reason when it is the problem)
    HOST_KEYS_PRESENT = "HostKeysPresent"
    HOST_KEYS_SECRET_MISSING = "HostKeysSecretMissing"  # noqa: S105 - a reason
    HOST_KEYS_NOT_READY = "HostKeysNotReady"
    # HostKeysRotating
    NEXT_KEYS_ANNOUNCED = "NextKeysAnnounced"
    NEXT_KEYS_PROMOTED = "NextKeysPromoted"
    NO_ROTATION = "NoRotation"
    # Routed (and NOT_ROUTED as Ready's reason)
    NOT_ROUTED = "NotRouted"
    PUBLISHED = "Published"  # in its routing shard, the gateway pods told
    DEDICATED = "Dedicated"  # spec.service.mode dedicated: no gateway involved
    LOGIN_CLASH = "LoginClash"  # another shared-mode District has the same login
    GATEWAY_NOT_INSTALLED = "GatewayNotInstalled"  # the operator was given no gateway
    SHARD_FULL = "ShardFull"  # its shard would pass a ConfigMap's 1 MiB
    ROUTE_INVALID = "RouteInvalid"  # its entry breaks a bound of the routing format
    PUBLISHING = "Publishing"  # Unknown: its entry waits for its shard's first write


# Reasons that come from a finished Job: kept across reconciles until the next Job says otherwise.
JOB_REASONS: Final = frozenset({Reason.SUCCEEDED, Reason.NOTHING_TO_DO, Reason.NEEDS_ATTENTION,
                                Reason.JOB_FAILED, Reason.BACKUP_SUCCEEDED, Reason.BACKUP_FAILED,
                                Reason.PULL_SUCCEEDED, Reason.PULL_FAILED})
# DownloadsHealthy's reason when that download job's last run failed.
DOWNLOAD_FAILED_REASONS: Final[Mapping[JobKind, Reason]] = {
    JobKind.DOCVIEWER: Reason.DOCVIEWER_FAILED, JobKind.PDFS: Reason.PDFS_FAILED}
# ProcessingHealthy's reason for each outcome of an epochs run.
EPOCHS_OUTCOME_REASONS: Final[Mapping[Outcome, Reason]] = {
    Outcome.SUCCEEDED: Reason.SUCCEEDED, Outcome.NOTHING_TO_DO: Reason.NOTHING_TO_DO,
    Outcome.NEEDS_ATTENTION: Reason.NEEDS_ATTENTION, Outcome.FAILED: Reason.JOB_FAILED}
# Ready's reason when this condition is the first problem.
NOT_READY: Final[Mapping[ConditionType, Reason]] = {
    ConditionType.STORAGE_READY: Reason.STORAGE_NOT_READY,
    ConditionType.SERVER_READY: Reason.SERVER_NOT_READY,
    ConditionType.KEYS_VALID: Reason.KEYS_NOT_READY,
    ConditionType.PROCESSING_HEALTHY: Reason.PROCESSING_NOT_READY,
    ConditionType.BACKUPS_HEALTHY: Reason.BACKUPS_NOT_READY,
    ConditionType.DOWNLOADS_HEALTHY: Reason.DOWNLOADS_NOT_READY,
    ConditionType.PULL_HEALTHY: Reason.PULL_NOT_READY,
    ConditionType.HOST_KEYS_READY: Reason.HOST_KEYS_NOT_READY,
    ConditionType.ROUTED: Reason.NOT_ROUTED}
# KeysValid reasons that leave nobody able to log in (some keys left out still lets others in).
KEYS_LOCK_OUT: Final = frozenset({Reason.NO_VALID_KEYS, Reason.KEYS_SECRET_NOT_FOUND,
                                  Reason.KEYS_SECRET_KEY_MISSING})
# A volume claim's phase as StorageReady's reason.
CLAIM_PHASES: Final[Mapping[str, Reason]] = {"Pending": Reason.PENDING, "Lost": Reason.LOST}
# Conditions where "True" is the bad news (the API conventions allow such "abnormal-true" types).
ABNORMAL_TRUE: Final = frozenset({ConditionType.UPLOADS_NEED_ATTENTION,
                                  ConditionType.UPLOADS_OVERDUE})
# Conditions that are news either way (a Normal Event for each change, never a Warning).
INFORMATIONAL: Final = frozenset({ConditionType.HOST_KEYS_ROTATING})
# Conditions whose every change is also posted to the District's webhook.
POSTED: Final = frozenset({ConditionType.HOST_KEYS_READY, ConditionType.HOST_KEYS_ROTATING})
