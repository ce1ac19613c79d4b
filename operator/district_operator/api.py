"""The one module that talks to the Kubernetes API: server-side apply, reads, status, Events."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from district_operator import names

# kind -> (API path prefix, plural): every kind the operator and kubectl-district read or write
# through Kube; the chart's RBAC grants each (tests/charts checks it). Kinds that only the dev
# cluster's stand-ins and the tests address (PersistentVolume, ReplicaSet: see
# district_devtools.localcluster.node.DEV_KINDS) are not here: such a client is given them as
# `extra_kinds`, so that this list stays what the operator's own Role must allow.
Kinds = Mapping[str, tuple[str, str]]
KINDS: dict[str, tuple[str, str]] = {
    "Secret": ("/api/v1", "secrets"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "Job": ("/apis/batch/v1", "jobs"),
    names.KIND: (f"/apis/{names.API_VERSION}", names.PLURAL),
}
# Kinds the operator addresses only in the gateway's namespace (the routing shards,
# routepublisher.py), granted by a Role there and never in the Districts' namespaces: the
# operator's client is given them as `extra_kinds`.
GATEWAY_KINDS: dict[str, tuple[str, str]] = {"ConfigMap": ("/api/v1", "configmaps")}


class ApiError(RuntimeError):
    """The API server refused a request; `status` is the HTTP code, `reason` its Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(ApiError):
    pass


class AlreadyExistsError(ApiError):
    pass


def load_configuration(pool_size: int = 32) -> k8s_client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        # Read KUBECONFIG now: the client library reads it once, at import time.
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return configuration


def path(kind: str, namespace: str | None, name: str | None = None,
         subresource: str | None = None, kinds: Kinds = KINDS) -> str:
    try:
        prefix, plural = kinds[kind]
    except KeyError:
        raise ValueError(f"{kind} is not a kind this client addresses (api.KINDS, or the "
                         "client's extra_kinds)") from None
    parts = [prefix]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


# Called with (verb, kind) before every request: the operator counts them in its metrics.
RequestHook = Callable[[str, str], None]


class Kube:
    """A thin, thread-safe JSON client: plain dicts in and out, no generated model classes.

    Every write carries `field_manager`, so managedFields tell its writer apart from the
    others (the operator, `kubectl district`, the kubelet stand-in); `on_request` sees every
    request's verb and kind. It addresses the kinds of KINDS, and `extra_kinds` besides.
    """

    def __init__(self, configuration: k8s_client.Configuration | None = None, *,
                 field_manager: str, on_request: RequestHook | None = None,
                 extra_kinds: Kinds | None = None) -> None:
        self._client = k8s_client.ApiClient(configuration or load_configuration())
        self.field_manager = field_manager
        self._on_request = on_request
        self.kinds: Kinds = {**KINDS, **extra_kinds} if extra_kinds else KINDS

    def acting_as(self, field_manager: str, *, extra_kinds: Kinds | None = None) -> Kube:
        """This client's connection writing as another field manager, with no request hook,
        addressing `extra_kinds` too (the dev cluster's kinds).

        The two share one connection pool: close only the original.
        """
        other = copy.copy(self)
        other.field_manager = field_manager
        other._on_request = None
        if extra_kinds:
            other.kinds = {**self.kinds, **extra_kinds}
        return other

    def _path(self, kind: str, namespace: str | None, name: str | None = None,
              subresource: str | None = None) -> str:
        return path(kind, namespace, name, subresource, self.kinds)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def request(self, verb: str, method: str, kind: str, url: str, *,
                body: Any = None, query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> dict[str, Any]:
        if self._on_request is not None:
            self._on_request(verb, kind)
        _, full_url, headers, body_out, _ = self._client.param_serialize(
            method=method, resource_path=url, query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"])
        response = self._client.call_api(method, full_url, header_params=headers, body=body_out,
                                         _request_timeout=60)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        decoded: dict[str, Any] = json.loads(data) if data else {}
        if response.status >= 400:
            message = str(decoded.get("message") or data[:500])
            reason = str(decoded.get("reason") or "")
            error: type[ApiError] = ApiError
            if response.status == 404:
                error = NotFoundError
            elif response.status == 409 and reason == "AlreadyExists":
                error = AlreadyExistsError
            raise error(response.status, reason, message)
        return decoded

    # ---- reads ----------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("get", "GET", kind, self._path(kind, namespace, name))
        except NotFoundError:
            return None

    def list(self, kind: str, namespace: str | None, label_selector: str | None = None
             ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        items: list[dict[str, Any]] = self.request(
            "list", "GET", kind, self._path(kind, namespace), query=query).get("items", [])
        return items

    # ---- writes ---------------------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as this client's field manager; force takes back hand-edited fields."""
        meta = manifest["metadata"]
        return self.request(
            "apply", "PATCH", manifest["kind"],
            self._path(manifest["kind"], meta["namespace"], meta["name"]),
            body=dict(manifest), content_type="application/apply-patch+yaml",
            query={"fieldManager": self.field_manager, "force": "true"})

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the object (cluster-scoped when its metadata names no namespace)."""
        meta = manifest["metadata"]
        return self.request("create", "POST", manifest["kind"],
                            self._path(manifest["kind"], meta.get("namespace")),
                            body=dict(manifest),
                            query={"fieldManager": self.field_manager})

    def bind_pod(self, namespace: str, pod: str, node: str) -> None:
        """The scheduler's write: bind a pending Pod to a node (its `binding` subresource)."""
        self.request("create", "POST", "Pod", self._path("Pod", namespace, pod, "binding"),
                     body={"apiVersion": "v1", "kind": "Binding",
                           "metadata": {"name": pod, "namespace": namespace},
                           "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
                     query={"fieldManager": self.field_manager})

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            self.request("delete", "DELETE", kind, self._path(kind, namespace, name),
                         body={"propagationPolicy": "Background"})

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        return self.request("patch", "PATCH", kind,
                            self._path(kind, namespace, name, subresource),
                            body=dict(patch), content_type="application/merge-patch+json",
                            query={"fieldManager": self.field_manager})

    def patch_district_status(self, namespace: str, name: str,
                              patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.merge_patch(names.KIND, namespace, name, {"status": dict(patch)}, "status")

    def event(self, district: Mapping[str, Any], event_type: str, reason: str,
              message: str) -> None:
        """Record a core/v1 Event on the District (kubectl describe shows it)."""
        meta = district["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.create({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": names.API_VERSION, "kind": names.KIND,
                               "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": event_type,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": self.field_manager},
            "reportingComponent": self.field_manager,
            "reportingInstance": self.field_manager,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        })
