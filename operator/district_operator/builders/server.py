"""The Deployment running `sftpd serve`: one replica, Recreate, restricted and token-less."""

from __future__ import annotations

from typing import Any

from district_contract import commands
from district_contract.commands import env_var

from district_operator import names
from district_operator.builders.common import (
    BuildInputs,
    SharedMode,
    container_security_context,
    data_mounts,
    data_volumes,
    env,
    image_pull_secrets,
    metadata,
    pod_security_context,
)
from district_operator.model import District

# Secret volumes: private host keys readable by the owner only (the contract's 0400), public
# authorized keys readable by all.
HOST_KEY_MODE = 0o400
AUTHORIZED_KEYS_MODE = 0o444


def server_env(district: District, shared: SharedMode | None = None) -> dict[str, str]:
    host_keys = ",".join(f"{names.HOST_KEYS_DIR}/{file_name}"
                         for file_name in names.HOST_KEY_FILES.values())
    values = {
        env_var(commands.ROOT): names.DATA_MOUNT,
        env_var(commands.LOGIN): district.login,
        env_var(commands.PORT): str(names.SSH_PORT),
        env_var(commands.METRICS_PORT): str(names.METRICS_PORT),
        env_var(commands.HOST_KEY): host_keys,
        # Present only while a rotation is in flight; the server skips absent ones and re-reads
        # the volume when the kubelet updates it, so a rotation needs no restart.
        env_var(commands.NEXT_HOST_KEY): ",".join(
            f"{names.HOST_KEYS_DIR}/{file_name}"
            for file_name in names.NEXT_HOST_KEY_FILES.values()),
        env_var(commands.AUTHORIZED_KEYS):
            f"{names.AUTHORIZED_KEYS_DIR}/{names.AUTHORIZED_KEYS_FILE}",
    }
    if district.allowed_source_ranges:
        # Enforced again in the server: a NetworkPolicy sees no client address behind some
        # load balancers, the server's own check always does.
        values[env_var(commands.ALLOWED_SOURCE)] = ",".join(district.allowed_source_ranges)
    if district.downloads.directories:
        # Read-only directories under /downloads/ that integrations of the district's state
        # write; the server shows them, present and empty until then.
        values[env_var(commands.DOWNLOAD_DIRECTORIES)] = ",".join(
            district.downloads.directories)
    if shared is not None and shared.gateway_namespace is not None:
        # Behind the gateway: its pods must send the PROXY header naming the real client, and
        # only its key logs in on their connections. The key file sits in the authorized-keys
        # volume, which the server rereads, so a new gateway key needs no restart.
        values[env_var(commands.PROXY_FROM)] = ",".join(shared.proxy_from)
        values[env_var(commands.GATEWAY_KEY)] = \
            f"{names.AUTHORIZED_KEYS_DIR}/{names.GATEWAY_PUBLIC_KEY_FILE}"
    return values


def deployment(district: District, inputs: BuildInputs,
               shared: SharedMode | None = None) -> dict[str, Any]:
    pod_labels = names.labels(district.name, names.COMPONENT_SERVER)
    container: dict[str, Any] = {
        "name": names.CONTAINER_SERVER,
        "image": inputs.image,
        "imagePullPolicy": inputs.image_pull_policy,
        "args": [commands.SERVE, "--" + commands.ROOT, names.DATA_MOUNT],
        "env": env(server_env(district, shared)),
        "ports": [
            {"name": names.PORT_NAME_SSH, "containerPort": names.SSH_PORT, "protocol": "TCP"},
            {"name": names.PORT_NAME_METRICS, "containerPort": names.METRICS_PORT,
             "protocol": "TCP"},
        ],
        "readinessProbe": {"tcpSocket": {"port": names.PORT_NAME_SSH}, "periodSeconds": 10,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/metrics", "port": names.PORT_NAME_METRICS},
                          "initialDelaySeconds": 10, "periodSeconds": 20,
                          "failureThreshold": 3},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            *data_mounts(),
            {"name": names.VOLUME_HOST_KEYS, "mountPath": names.HOST_KEYS_DIR, "readOnly": True},
            {"name": names.VOLUME_AUTHORIZED_KEYS, "mountPath": names.AUTHORIZED_KEYS_DIR,
             "readOnly": True},
        ],
    }
    resources = inputs.server_resources.manifest()
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(district, names.deployment(district.name), names.COMPONENT_SERVER),
        "spec": {
            # Suspended: no server, so every login is refused; the volume and keys stay.
            "replicas": 0 if district.suspend else 1,
            "revisionHistoryLimit": 3,
            # A ReadWriteOnce volume cannot be mounted by the old and the new pod at once.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": names.server_selector(district.name)},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    **image_pull_secrets(inputs),
                    "volumes": [
                        *data_volumes(district),
                        {"name": names.VOLUME_HOST_KEYS,
                         "secret": {"secretName": names.host_keys_secret(district.name),
                                    "defaultMode": HOST_KEY_MODE}},
                        {"name": names.VOLUME_AUTHORIZED_KEYS,
                         "secret": {"secretName": names.authorized_keys_secret(district.name),
                                    "defaultMode": AUTHORIZED_KEYS_MODE}},
                    ],
                },
            },
        },
    }
