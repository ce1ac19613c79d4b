"""Every name, label and annotation the operator writes; pod paths and ports are the contract's."""

from __future__ import annotations

from typing import Final

from district_contract import commands, layout
from district_contract.results import JobKind

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
# On the host-key Secret, the rotation's state (docs/operator.md, host key rotation): the
# spec.hostKeys.rotate value last acted on, since when the next keys are announced (while a
# rotation is in flight), and when the last rotation completed.
ANNOTATION_HOST_KEYS_ROTATION: Final = f"{GROUP}/host-keys-rotation"
ANNOTATION_HOST_KEYS_NEXT_SINCE: Final = f"{GROUP}/host-keys-next-since"
ANNOTATION_HOST_KEYS_ROTATED_AT: Final = f"{GROUP}/host-keys-rotated-at"

COMPONENT_SERVER: Final = "sftpd"
COMPONENT_HOST_KEYS: Final = "host-keys"
COMPONENT_AUTHORIZED_KEYS: Final = "authorized-keys"
COMPONENT_STORAGE: Final = "storage"
COMPONENT_NETWORK: Final = "network"
# The shared SSH gateway (docs/gateway.md): the chart installs its Deployment and Service; the
# operator writes its routing ConfigMaps and its two Secrets in the gateway's namespace.
COMPONENT_GATEWAY: Final = "gateway"
COMPONENT_ROUTES: Final = "routes"
GATEWAY_DEFAULT_NAME: Final = "district-sftp-gateway"
# Patched on the gateway's pods after routing ConfigMaps change: a pod update makes the kubelet
# sync that pod's volumes at once instead of on its periodic sync (about a minute).
ANNOTATION_ROUTES_REVISION: Final = f"{GROUP}/routes-revision"
# Patched on a District's server pods after its authorized-keys Secret changed (the same
# kubelet sync): a key added, removed or the gateway key changed is seen within seconds.
ANNOTATION_KEYS_REVISION: Final = f"{GROUP}/keys-revision"
# In each shared-mode District's authorized-keys Secret (so mounted beside authorized_keys):
# the gateway's public key, which `sftpd serve --gateway-key` reads.
GATEWAY_PUBLIC_KEY_FILE: Final = "gateway_key.pub"
# In the gateway key Secret: the private key `sftpd gateway --gateway-key` reads, and its
# public half.
GATEWAY_PRIVATE_KEY_FILE: Final = "gateway_key"
JOB_EPOCHS: Final = JobKind.EPOCHS.value
JOB_RETENTION: Final = JobKind.RETENTION.value
JOB_BACKUP: Final = JobKind.BACKUP.value
JOB_PULL: Final = JobKind.PULL.value  # spec.integration.mode pull: the SIF pull
# The jobs writing /downloads/docviewer and /downloads/pdfs (spec.downloads).
JOB_DOCVIEWER: Final = JobKind.DOCVIEWER.value
JOB_PDFS: Final = JobKind.PDFS.value
DOWNLOAD_JOBS: Final = (JOB_DOCVIEWER, JOB_PDFS)
JOBS: Final = (JOB_EPOCHS, JOB_RETENTION, JOB_BACKUP, JOB_PULL, *DOWNLOAD_JOBS)
# The sftpd subcommand each CronJob runs.
JOB_COMMANDS: Final = {JOB_EPOCHS: commands.PROCESS_EPOCHS, JOB_RETENTION: commands.RETENTION,
                       JOB_BACKUP: commands.BACKUP, JOB_PULL: commands.SIF_PULL,
                       JOB_DOCVIEWER: commands.DOCVIEWER, JOB_PDFS: commands.PDFS}

# The pod's side of the contract with the data plane: paths, ports and user are the contract's.
DATA_MOUNT: Final = layout.DATA_MOUNT
HOST_KEYS_DIR: Final = layout.HOST_KEYS_DIR
AUTHORIZED_KEYS_DIR: Final = layout.AUTHORIZED_KEYS_DIR
AUTHORIZED_KEYS_FILE: Final = layout.AUTHORIZED_KEYS_FILE
HOST_KEY_FILES: Final = layout.HOST_KEY_FILES
DOCVIEWER_TOKEN_DIR: Final = layout.DOCVIEWER_TOKEN_DIR
DOCVIEWER_TOKEN_FILE: Final = layout.DOCVIEWER_TOKEN_FILE
NEXT_HOST_KEY_FILES: Final = layout.NEXT_HOST_KEY_FILES
TERMINATION_LOG: Final = layout.TERMINATION_LOG
SSH_PORT: Final = layout.SSH_PORT
METRICS_PORT: Final = layout.METRICS_PORT
RUN_AS_USER: Final = layout.RUN_AS_USER
DATABASE_URL_ENV: Final = layout.DATABASE_URL_ENV
PORT_NAME_SSH: Final = "ssh"
PORT_NAME_METRICS: Final = "metrics"
CONTAINER_SERVER: Final = "sftpd"
VOLUME_DATA: Final = "data"
VOLUME_HOST_KEYS: Final = "host-keys"
VOLUME_AUTHORIZED_KEYS: Final = "authorized-keys"
VOLUME_TMP: Final = "tmp"
VOLUME_DOCVIEWER_TOKEN: Final = "docviewer-token"  # noqa: S105 (a volume name)
# The SIF pull's Secret volumes (spec.integration.sif) and where the contract mounts them.
VOLUME_SIF_AUTH: Final = "sif-auth"
VOLUME_SIF_CA: Final = "sif-ca"
SIF_AUTH_DIR: Final = layout.SIF_AUTH_DIR
SIF_CA_DIR: Final = layout.SIF_CA_DIR
SIF_CA_FILE: Final = layout.SIF_CA_FILE

# Secret keys read from the district's own Secrets (defaults; the District may name others).
DATABASE_URI_KEY: Final = "uri"
WEBHOOK_URL_KEY: Final = "url"
DOCVIEWER_TOKEN_KEY: Final = layout.DOCVIEWER_TOKEN_FILE


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


def pull_network_policy(district: str) -> str:
    """The egress policy of the SIF pull's pods (spec.integration.mode pull)."""
    return f"{district}-pull-egress"


def gateway_routes_configmap(gateway: str, shard: int) -> str:
    """One routing shard (district_contract.routes), data key routes.shard_file(shard)."""
    return f"{gateway}-routes-{shard:03d}"


def gateway_host_keys_secret(gateway: str) -> str:
    """The gateway's host keys, with the layout and rotation of a District's host-key Secret."""
    return f"{gateway}-host-keys"


def gateway_key_secret(gateway: str) -> str:
    """The key pair the gateway logs in to district servers with."""
    return f"{gateway}-key"


def gateway_service(gateway: str) -> str:
    """The gateway's LoadBalancer Service (installed by the chart): shared mode's endpoint."""
    return gateway


def gateway_selector(gateway: str) -> dict[str, str]:
    """The labels of the gateway's pods (the chart's Deployment)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: gateway, LABEL_COMPONENT: COMPONENT_GATEWAY}


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


def job_selector(district: str, job: str) -> dict[str, str]:
    """The labels selecting the pods of one of the district's CronJobs."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: district, LABEL_COMPONENT: job}


def managed_selector() -> str:
    """A label selector matching every object this operator manages."""
    return f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"
