"""Thin kopf handlers: each cause or watch event is one call to reconciler, cache or recorder."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from district_operator import api, metrics, names
from district_operator.config import OperatorConfig
from district_operator.jobrecorder import JobRecorder
from district_operator.model import InvalidDistrictError
from district_operator.reconciler import Reconciler
from district_operator.storage import MemoryDiffBaseStorage, MemoryProgressStorage

log = logging.getLogger(__name__)
DISTRICTS = (names.GROUP, names.VERSION, names.PLURAL)
MANAGED = {names.LABEL_MANAGED_BY: names.FIELD_MANAGER}
# Children whose changes (deletion, hand edits, status) trigger a reconcile of their District.
CHILD_RESOURCES: tuple[tuple[str, str, str, str], ...] = (
    ("Secret", "", "v1", "secrets"),
    ("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims"),
    ("Service", "", "v1", "services"),
    ("Deployment", "apps", "v1", "deployments"),
    ("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
    ("CronJob", "batch", "v1", "cronjobs"),
)


def _measured(trigger: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    try:
        action()
    except InvalidDistrictError as exc:
        metrics.RECONCILES.labels(trigger, "invalid").inc()
        raise kopf.PermanentError(str(exc)) from exc
    except Exception:
        metrics.RECONCILES.labels(trigger, "error").inc()
        metrics.RECONCILE_ERRORS.labels(trigger).inc()
        raise
    else:
        metrics.RECONCILES.labels(trigger, "ok").inc()
    finally:
        metrics.RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - started)


def job_finished_unrecorded(body: Mapping[str, Any], **_: Any) -> bool:
    annotations = body.get("metadata", {}).get("annotations") or {}
    if names.ANNOTATION_RESULT_RECORDED in annotations:
        return False
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in conditions)


def resync_district(reconciler: Reconciler, body: Mapping[str, Any]) -> None:
    """The periodic resync's reconcile (see resync.py), measured like the handlers."""
    _measured("resync", lambda: reconciler.reconcile(body))


def in_cluster_server(environ: Mapping[str, str]) -> str | None:
    """The API server's address as the kubelet gives it to every pod (KUBERNETES_SERVICE_HOST
    and _PORT), which the kubernetes client uses too. kopf's own default names
    kubernetes.default.svc, which needs cluster DNS; the address does not."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def register(registry: kopf.OperatorRegistry, config: OperatorConfig,
             reconciler: Reconciler, recorder: JobRecorder) -> None:
    """Register every handler for one operator instance (no module-level global state)."""
    diffbase = MemoryDiffBaseStorage()
    progress = MemoryProgressStorage()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials and address the API module uses: in-cluster, else the kubeconfig.
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        if info is None:
            return kopf.login_with_kubeconfig(**kwargs)
        return dataclasses.replace(info, server=in_cluster_server(os.environ) or info.server)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.diffbase_storage = diffbase
        settings.persistence.progress_storage = progress
        # Our own Events say what matters; kopf's per-handler "succeeded" Events would be a write
        # on every resync.
        settings.posting.enabled = False
        settings.execution.max_workers = config.workers
        settings.peering.standalone = config.peering is None
        settings.peering.mandatory = config.peering is not None
        if config.peering is not None:
            settings.peering.name = config.peering
        settings.watching.server_timeout = 600
        settings.watching.client_timeout = 660
        # kopf runs one worker task per object with events (capped per watched kind and
        # namespace), and each holds that object's body (and, for a District waiting for a
        # reconciling thread, its whole handler state) until it has been idle for idle_timeout
        # (5 s by default). The operator's RSS grows with the number of live workers and does
        # not shrink afterwards, so both are kept small: about as many District workers as
        # reconciling threads, each gone 0.3 s after its last event. Measured after a burst of
        # 400 new Districts (bench/operator_scale.py, 16 threads): 199 MB with 1,000 workers,
        # 151 MB with 64, 105 MB with 24 and this timeout, in the same time (62-65 s); 24
        # workers with the 5 s timeout took 91 s.
        settings.queueing.worker_limit = config.workers + 8
        settings.queueing.idle_timeout = 0.3
        # After a failed handler kopf sleeps in that object's worker, holding its slot, and then
        # "touches" the object to retry, which our progress storage does not do (the periodic
        # resync retries instead): the default 60 s sleep would only hold the slot, and 24
        # Districts failing at once (an API server shedding load) would stall the watch.
        settings.execution.default_backoff = 1
        # One line per handler run is noise at scale (and costs real CPU); failures still log.
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    def reconcile_body(trigger: str, body: Mapping[str, Any]) -> None:
        _measured(trigger, lambda: reconciler.reconcile(body))

    @kopf.on.resume(*DISTRICTS, registry=registry, id="reconcile-resume")
    @kopf.on.create(*DISTRICTS, registry=registry, id="reconcile-create")
    @kopf.on.update(*DISTRICTS, registry=registry, id="reconcile-update")
    def district_changed(body: kopf.Body, reason: str, **_: Any) -> None:
        reconcile_body(str(reason), body)

    @kopf.on.event(*DISTRICTS, registry=registry, id="forget",
                   when=lambda type, **_: type == "DELETED")
    def district_gone(body: kopf.Body, **_: Any) -> None:
        # Children go with the garbage collector (owner references); only memory is freed here.
        # (No on.delete handler and no kopf timer: either would put a finalizer on Districts.)
        meta = body.get("metadata", {})
        reconciler.cache.forget(meta.get("namespace", ""), meta.get("name", ""),
                                meta.get("uid", ""))
        if reconciler.routes is not None:
            reconciler.routes.release((meta.get("namespace", ""), meta.get("name", "")))
        diffbase.forget(meta.get("uid", ""))
        progress.forget(meta.get("uid", ""))

    def worth_a_look(kind: str) -> Callable[..., bool]:
        # Runs in kopf's event loop before any thread is taken or any log line written: most
        # child events are the echo of our own writes.
        def check(type: str | None, body: kopf.Body, **_: Any) -> bool:
            if type is None:
                return False  # initial listing: each District's own resume covers its children
            return type == "DELETED" or not reconciler.cache.is_known_version(kind, body)
        return check

    def reconcile_owner(kind: str, event_type: str, body: Mapping[str, Any]) -> None:
        if reconciler.check_child(kind, event_type, body):
            return
        meta = body.get("metadata", {})
        owner = (meta.get("labels") or {}).get(names.LABEL_DISTRICT)
        if not owner:
            return
        district = reconciler.kube.get(names.KIND, meta.get("namespace", ""), owner)
        if district is None or district.get("metadata", {}).get("deletionTimestamp"):
            return
        reconcile_body(f"child-{kind}", district)

    for kind, group, version, plural in CHILD_RESOURCES:
        def child_changed(type: str, body: kopf.Body, _kind: str = kind, **_: Any) -> None:
            try:
                reconcile_owner(_kind, type, body)
            except api.ApiError as exc:
                log.warning("reconcile after %s change failed: %s", _kind, exc)

        kopf.on.event(group, version, plural, registry=registry, labels=MANAGED,
                      when=worth_a_look(kind), id=f"child-{plural}")(child_changed)

    def names_a_district(type: str | None, body: kopf.Body, **_: Any) -> bool:
        # A Secret a District names (its keys, a database, ...), not one of its children, whose
        # data changed (not only its metadata). Runs in kopf's event loop for every Secret
        # event: a label read and one short lock, a digest of the data only for a named one.
        if type is None:
            # Initial listing (also after a watch expired): each District's resume, or the
            # resync, reads its Secrets.
            return False
        meta = body.get("metadata", {})
        if (meta.get("labels") or {}).get(names.LABEL_MANAGED_BY) == names.FIELD_MANAGER:
            return False
        if not reconciler.cache.referrers(meta.get("namespace", ""), meta.get("name", "")):
            return False
        return reconciler.cache.named_secret_changed(type, body)

    @kopf.on.event("", "v1", "secrets", registry=registry, when=names_a_district,
                   id="referenced-secrets")
    def referenced_secret_changed(body: kopf.Body, **_: Any) -> None:
        # What the Secret holds reaches the District's children now (keys copied into its
        # authorized-keys Secret, a database found at last), not at the next resync.
        meta = body.get("metadata", {})
        namespace = meta.get("namespace", "")
        for name in reconciler.cache.referrers(namespace, meta.get("name", "")):
            try:
                district = reconciler.kube.get(names.KIND, namespace, name)
                if district is None or district.get("metadata", {}).get("deletionTimestamp"):
                    continue
                reconcile_body("secret-ref", district)
            except Exception as exc:  # one District's failure must skip no other
                # Counted by _measured; the resync retries it.
                log.warning("reconcile of %s/%s after its Secret %s changed failed: %s",
                            namespace, name, meta.get("name"), exc)

    @kopf.on.event("batch", "v1", "jobs", registry=registry, labels=MANAGED,
                   when=job_finished_unrecorded, id="job-finished")
    def job_finished(body: kopf.Body, **_: Any) -> None:
        _measured("job", lambda: recorder.record(body))
