"""Every name, label, annotation, path and port the operator writes: spelled here only."""

from __future__ import annotations

from typing import Final

GROUP: Final = "districtsftp.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "District"
PLURAL: Final = "districts"

# Server-side apply: every object we own is written by this one field manager.
FIELD_MANAGER: Final = "district-sftp"
APP_NAME: Final = "district-sftp"

# Labels on every child (app.kubernetes.io/* plus the district's name).
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_DISTRICT: Final = f"{GROUP}/district"
# Kubernetes adds this label to every pod a Job creates (1.27+).
LABEL_JOB_NAME: Final = "batch.kubernetes.io/job-name"

# The hash of the manifest we last applied: lets a resync skip identical writes.
ANNOTATION_APPLIED_HASH: Final = f"{GROUP}/applied-hash"
# Set on a finished Job once its result is in the District's status (and notified).
ANNOTATION_RESULT_RECORDED: Final = f"{GROUP}/result-recorded"

COMPONENT_SERVER: Final = "sftpd"
COMPONENT_HOST_KEYS: Final = "host-keys"
COMPONENT_AUTHORIZED_KEYS: Final = "authorized-keys"
COMPONENT_STORAGE: Final = "storage"
COMPONENT_NETWORK: Final = "network"
JOB_EPOCHS: Final = "epochs"
JOB_RETENTION: Final = "retention"
JOB_BACKUP: Final = "backup"
JOBS: Final = (JOB_EPOCHS, JOB_RETENTION, JOB_BACKUP)
# The sftpd subcommand each CronJob runs.
JOB_COMMANDS: Final = {JOB_EPOCHS: "process-epochs", JOB_RETENTION: "retention",
                       JOB_BACKUP: "backup"}

# Pod contract shared with the data plane (see /tmp contract in docs/operator.md).
DATA_MOUNT: Final = "/data"
HOST_KEYS_DIR: Final = "/etc/sftpd/host-keys"
AUTHORIZED_KEYS_DIR: Final = "/etc/sftpd/authorized-keys"
AUTHORIZED_KEYS_FILE: Final = "authorized_keys"
HOST_KEY_FILES: Final = {"ssh-ed25519": "ssh_host_ed25519_key", "ssh-rsa": "ssh_host_rsa_key"}
TERMINATION_LOG: Final = "/dev/termination-log"
SSH_PORT: Final = 2222
METRICS_PORT: Final = 9090
RUN_AS_USER: Final = 10001
PORT_NAME_SSH: Final = "ssh"
PORT_NAME_METRICS: Final = "metrics"
CONTAINER_SERVER: Final = "sftpd"
VOLUME_DATA: Final = "data"
VOLUME_HOST_KEYS: Final = "host-keys"
VOLUME_AUTHORIZED_KEYS: Final = "authorized-keys"
VOLUME_TMP: Final = "tmp"

# Secret keys read from the district's own Secrets (defaults; the District may name others).
DATABASE_URI_KEY: Final = "uri"
WEBHOOK_URL_KEY: Final = "url"
DATABASE_URL_ENV: Final = "DATABASE_URL"


def host_keys_secret(district: str) -> str:
    return f"{district}-host-keys"


def authorized_keys_secret(district: str) -> str:
    return f"{district}-authorized-keys"


def data_pvc(district: str) -> str:
    return f"{district}-data"


def deployment(district: str) -> str:
    return f"{district}-sftpd"


def service(district: str) -> str:
    return f"{district}-sftp"


def network_policy(district: str) -> str:
    return f"{district}-sftpd"


def cronjob(district: str, job: str) -> str:
    return f"{district}-{job}"


def labels(district: str, component: str) -> dict[str, str]:
    """The labels every child of `district` carries."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: district,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_DISTRICT: district,
    }


def server_selector(district: str) -> dict[str, str]:
    """The labels selecting the district's SFTP server pod (a Deployment selector is immutable)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: district, LABEL_COMPONENT: COMPONENT_SERVER}


def managed_selector() -> str:
    """A label selector matching every object this operator manages."""
    return f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"
