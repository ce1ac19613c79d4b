"""Pieces every builder shares: explicit inputs, metadata with labels and owner, pod security."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from district_operator import names
from district_operator.model import District


@dataclass(frozen=True)
class Resources:
    """Container resource requests and limits (Kubernetes quantities, written canonically)."""

    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


@dataclass(frozen=True)
class BuildInputs:
    """What the manifests need beyond the District: from the operator's configuration."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    # Secrets (in each District's namespace) for pulling the image from a private registry.
    image_pull_secrets: tuple[str, ...] = ()
    # From bench/sftpd_memory.py: an idle `sftpd serve` after a login holds about 44 MiB RSS,
    # each idle session about 35 KiB more, each running upload about 2.5 MiB more (8 uploads
    # at once peaked at 60-64 MiB); the limit leaves room for --max-sessions (100) uploads.
    server_resources: Resources = Resources(
        requests={"cpu": "50m", "memory": "48Mi"}, limits={"memory": "256Mi"})
    job_resources: Resources = Resources(
        requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "1Gi"})


@dataclass(frozen=True)
class SharedMode:
    """spec.service.mode shared: what a District's children need of the shared SSH gateway
    (docs/gateway.md). `gateway_namespace` None: the operator was given no gateway, so the
    District is reachable by nobody until one is installed (its Service stays a ClusterIP)."""

    gateway_namespace: str | None = None
    gateway_name: str = names.GATEWAY_DEFAULT_NAME
    # `sftpd serve --proxy-from`: the gateway pods' addresses as the district pod sees them
    proxy_from: tuple[str, ...] = ()
    # The gateway's public key line (the gateway key Secret's gateway_key.pub); "" while unknown
    gateway_public_key: str = ""


def owner_reference(district: District) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": district.name,
        "uid": district.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(district: District, name: str, component: str, *, owned: bool = True,
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": district.namespace,
        "labels": names.labels(district.name, component),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    if owned:
        meta["ownerReferences"] = [owner_reference(district)]
    return meta


def image_pull_secrets(inputs: BuildInputs) -> dict[str, Any]:
    """The pod spec's imagePullSecrets entry, or nothing when the image needs none."""
    if not inputs.image_pull_secrets:
        return {}
    return {"imagePullSecrets": [{"name": name} for name in inputs.image_pull_secrets]}


def pod_security_context() -> dict[str, Any]:
    """Restricted Pod Security Standard; fsGroup lets uid 10001 read the 0400 secret files."""
    return {
        "runAsNonRoot": True,
        "runAsUser": names.RUN_AS_USER,
        "runAsGroup": names.RUN_AS_USER,
        "fsGroup": names.RUN_AS_USER,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def env(values: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": key, "value": value} for key, value in values.items()]


def data_volumes(district: District) -> list[dict[str, Any]]:
    """The data PVC and a /tmp emptyDir (the root file system is read-only)."""
    return [
        {"name": names.VOLUME_DATA,
         "persistentVolumeClaim": {"claimName": names.data_pvc(district.name)}},
        {"name": names.VOLUME_TMP, "emptyDir": {"sizeLimit": "256Mi"}},
    ]


def data_mounts() -> list[dict[str, Any]]:
    return [
        {"name": names.VOLUME_DATA, "mountPath": names.DATA_MOUNT},
        {"name": names.VOLUME_TMP, "mountPath": "/tmp"},
    ]
