"""Annotating running pods so the kubelet syncs their Secret and ConfigMap volumes now."""

from __future__ import annotations

import logging

from district_operator import api

log = logging.getLogger(__name__)


def touch_pods(kube: api.Kube, namespace: str, selector: dict[str, str], annotation: str,
               value: str) -> int:
    """Set `annotation` to `value` on every pod the labels select; the pods patched.

    The kubelet rewrites a pod's Secret and ConfigMap volumes on its periodic sync of that pod
    (about a minute by default) or at once when the pod itself changes: after writing such an
    object, a patch here brings its new content into the pods within about a second (measured
    on the real node: docs/gateway.md). A pod already carrying the value is left alone; one
    that cannot be listed or patched (going away, no rights) only costs the prompt refresh,
    the periodic sync still comes, so failures are logged, never raised.
    """
    text = ",".join(f"{k}={v}" for k, v in selector.items())
    try:
        pods = kube.list("Pod", namespace, text)
    except api.ApiError as exc:
        log.warning("listing pods %s in %s failed: %s", text, namespace, exc)
        return 0
    patched = 0
    for pod in pods:
        meta = pod.get("metadata", {})
        if (meta.get("annotations") or {}).get(annotation) == value:
            continue
        try:
            kube.merge_patch("Pod", namespace, meta.get("name", ""),
                             {"metadata": {"annotations": {annotation: value}}})
            patched += 1
        except api.ApiError as exc:
            log.info("touching pod %s/%s failed: %s", namespace, meta.get("name"), exc)
    return patched
