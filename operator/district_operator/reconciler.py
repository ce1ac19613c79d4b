"""One District's reconcile: read what is, build what should be, apply only the difference."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from district_operator import api, builders, drift, keys, names, status
from district_operator.builders.jobs import enabled_jobs
from district_operator.model import District, SecretKeyRef, parse_district
from district_operator.notifications import Notifier

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def _decode(secret: Mapping[str, Any], key: str) -> str | None:
    value = (secret.get("data") or {}).get(key)
    if value is None:
        return None
    return base64.b64decode(value).decode("utf-8", errors="replace")


def _utc_now() -> datetime:
    return datetime.now(UTC)


# The children whose state feeds the status; only the fields the status reads are remembered.
STATUS_CHILDREN = ("PersistentVolumeClaim", "Deployment", "Service")


def _trim(kind: str, body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if body is None:
        return None
    spec, state = body.get("spec") or {}, body.get("status") or {}
    if kind == "PersistentVolumeClaim":
        return {"spec": {"resources": spec.get("resources") or {}},
                "status": {k: state[k] for k in ("phase", "capacity") if k in state}}
    if kind == "Deployment":
        return {"status": {"availableReplicas": state.get("availableReplicas", 0)}}
    return {"spec": {"type": spec.get("type")},
            "status": {"loadBalancer": state.get("loadBalancer") or {}}}


def _stub_body(district: District) -> dict[str, Any]:
    """Enough of a District for an Event's involvedObject."""
    return {"metadata": {"name": district.name, "namespace": district.namespace,
                         "uid": district.uid}}


class Reconciler:
    """Turns Districts into their children; safe to call from many threads at once."""

    def __init__(self, kube: api.Kube, inputs: builders.BuildInputs,
                 notifier: Notifier | None = None, clock: Clock = _utc_now) -> None:
        self.kube = kube
        self.inputs = inputs
        self.notifier = notifier
        self.clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # resourceVersions we wrote or read last, so watch events about them can be skipped.
        self._seen_versions: dict[tuple[str, str, str], str] = {}
        # The status we last wrote per District uid: we are its only writer, and a watch event
        # or a GET may still show an older one.
        self._statuses: dict[str, dict[str, Any]] = {}
        # The last District seen and what its last reconcile observed, so that a child's watch
        # event is checked against that one child without reading everything again.
        self._districts: dict[tuple[str, str], District] = {}
        self._observed: dict[str, status.Observed] = {}
        self._applied_secrets: dict[tuple[str, str], dict[str, Any]] = {}

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def forget(self, namespace: str, name: str, uid: str) -> None:
        with self._locks_guard:
            self._locks.pop((namespace, name), None)
        self._statuses.pop(uid, None)
        self._observed.pop(uid, None)
        self._districts.pop((namespace, name), None)
        self._applied_secrets.pop((namespace, names.authorized_keys_secret(name)), None)

    def _remember(self, obj: Mapping[str, Any] | None) -> None:
        if obj:
            meta = obj.get("metadata", {})
            key = (str(obj.get("kind")), meta.get("namespace", ""), meta.get("name", ""))
            self._seen_versions[key] = meta.get("resourceVersion", "")

    def is_known_version(self, kind: str, body: Mapping[str, Any]) -> bool:
        """True when a watch event carries an object version this operator already saw."""
        meta = body.get("metadata", {})
        key = (kind, meta.get("namespace", ""), meta.get("name", ""))
        return bool(self._seen_versions.get(key) == meta.get("resourceVersion"))

    # ---- inputs from other objects ----------------------------------------------------------

    def _host_keys(self, district: District, fresh: bool) -> dict[str, str]:
        """The host-key files: created once; a Secret that exists is never regenerated."""
        name = names.host_keys_secret(district.name)
        secret = None if fresh else self.kube.get("Secret", district.namespace, name)
        if secret is None:
            manifest = builders.host_keys_secret(district, keys.generate_host_keys())
            try:
                secret = self.kube.create(manifest)
            except api.AlreadyExistsError:
                secret = self.kube.get("Secret", district.namespace, name)
                if secret is None:
                    raise
        files = {k: _decode(secret, k) or "" for k in (secret.get("data") or {})}
        missing = [t for t, f in names.HOST_KEY_FILES.items() if not files.get(f)]
        if missing:
            # Only a key that is absent is added; the ones districts already trust stay.
            generated = keys.generate_host_keys()
            added = {}
            for key_type in missing:
                file_name = names.HOST_KEY_FILES[key_type]
                for part in (file_name, file_name + ".pub"):
                    added[part] = base64.b64encode(generated[part].encode()).decode()
                    files[part] = generated[part]
            self.kube.merge_patch("Secret", district.namespace, name, {"data": added})
        self._remember(secret)
        return files

    def _secret_value(self, namespace: str, ref: SecretKeyRef, what: str,
                      cache: dict[str, dict[str, Any] | None] | None = None
                      ) -> tuple[str | None, status.SecretProblem | None]:
        if cache is not None and ref.name in cache:
            secret = cache[ref.name]
        else:
            secret = self.kube.get("Secret", namespace, ref.name)
            if cache is not None:
                cache[ref.name] = secret
        if secret is None:
            return None, status.SecretProblem(
                f"{what}SecretNotFound",
                f"Secret {ref.name} (named in the District for {what.lower()}) does not exist "
                f"in namespace {namespace}")
        value = _decode(secret, ref.key)
        if value is None or not value.strip():
            return None, status.SecretProblem(
                f"{what}SecretKeyMissing",
                f"Secret {ref.name} has no key {ref.key!r} (it must hold the "
                f"{'libpq connection URI' if what == 'Database' else 'value'})")
        return value, None

    def _key_check(self, district: District) -> tuple[keys.KeyCheck, status.SecretProblem | None]:
        sources = [(f"spec.authorizedKeys[{i}]", line)
                   for i, line in enumerate(district.authorized_keys)]
        problem = None
        ref = district.authorized_keys_secret
        if ref is not None:
            text, problem = self._secret_value(district.namespace, ref, "Keys")
            if text is not None:
                sources += [(f"Secret {ref.name} line {n}", line)
                            for n, line in enumerate(text.splitlines(), start=1)]
        return keys.check_keys(sources), problem

    def _database_problem(self, district: District, ref: SecretKeyRef | None, needed_for: str,
                          cache: dict[str, dict[str, Any] | None]
                          ) -> status.SecretProblem | None:
        if ref is None:
            if needed_for == "processing" and district.processing.formats:
                return status.SecretProblem(
                    "NoDatabase", "spec.processing.databaseSecretRef is not set: recognized "
                                  "uploads cannot be imported")
            return None
        value, problem = self._secret_value(district.namespace, ref, "Database", cache)
        if problem is not None:
            problem = status.SecretProblem(problem.reason, problem.message.replace(
                "for database", f"for {needed_for}"))
        elif value is not None and "://" not in value and "=" not in value:
            problem = status.SecretProblem(
                "DatabaseSecretInvalid",
                f"Secret {ref.name} key {ref.key!r} is not a libpq URI or connection string")
        return problem

    # ---- the reconcile ----------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Bring one District's children and status in line; returns the status left behind."""
        district = parse_district(body)
        with self._lock(district.key):
            remembered = self._statuses.get(district.uid)
            previous = dict(remembered if remembered is not None else body.get("status") or {})
            # A District never reconciled has no children worth reading: apply straight away.
            fresh = remembered is None and "observedGeneration" not in previous
            observed = status.Observed()
            observed.host_keys = keys.describe_host_keys(self._host_keys(district, fresh))
            observed.key_check, observed.keys_problem = self._key_check(district)
            if observed.key_check.rejected:
                log.info("district %s/%s: %d bad key(s) left out", district.namespace,
                         district.name, len(observed.key_check.rejected))
            secrets: dict[str, dict[str, Any] | None] = {}  # processing and backups share one
            observed.processing_database = self._database_problem(
                district, district.processing.database, "processing", secrets)
            observed.backups_database = self._database_problem(
                district, district.backups.database, "backups", secrets)
            children = builders.desired_children(district, self.inputs,
                                                 observed.key_check.authorized_keys_file())
            for manifest in children:
                live = self._converge(manifest, fresh, observed)
                self._observe(observed, manifest["kind"], live)
            if not fresh:
                self._remove_disabled_jobs(district)
            self._districts[district.key] = district
            self._observed[district.uid] = observed
            return self._write_status(body, district, observed, previous)

    @staticmethod
    def _observe(observed: status.Observed, kind: str, live: Mapping[str, Any] | None) -> None:
        if kind == "PersistentVolumeClaim":
            observed.pvc = _trim(kind, live)
        elif kind == "Deployment":
            observed.deployment = _trim(kind, live)
        elif kind == "Service":
            observed.service = _trim(kind, live)

    def check_child(self, kind: str, event_type: str, body: Mapping[str, Any]) -> bool:
        """Handle a child's watch event cheaply; False when a full reconcile is needed instead.

        Except for Secrets (whose content comes from other objects), a child's desired state is
        a pure function of its District, so the event's object is compared with a fresh build
        of that one child: an echo of our own write costs no request at all.
        """
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), (meta.get("labels") or {}).get(names.LABEL_DISTRICT, ""))
        if event_type == "DELETED":
            return False
        # Under the lock: a reconcile of this District in progress finishes first, and then its
        # result is what the event is compared with.
        with self._lock(key):
            district = self._districts.get(key)
            if district is None:
                return False
            if kind == "Secret":
                return self._secret_unchanged(district, body)
            wanted = next((m for m in builders.desired_children(district, self.inputs, "")
                           if m["kind"] == kind and m["metadata"]["name"] == meta.get("name")),
                          None)
            observed = self._observed.get(district.uid)
            if wanted is None or observed is None:
                return False
            observed.apply_errors.pop(kind, None)
            live: Mapping[str, Any] | None = body
            stamped = drift.with_hash(wanted)
            if drift.needs_apply(stamped, body):
                applied = self._apply(stamped, observed)
                if applied is not None:
                    live = applied
                self._remember(live)
            if kind in STATUS_CHILDREN:
                self._observe(observed, kind, live)
                previous = self._statuses.get(district.uid)
                if previous is not None:
                    self._write_status(_stub_body(district), district, observed, previous)
            return True

    def _secret_unchanged(self, district: District, body: Mapping[str, Any]) -> bool:
        name = body.get("metadata", {}).get("name")
        if name == names.host_keys_secret(district.name):
            data = body.get("data") or {}
            return all(data.get(f) for f in names.HOST_KEY_FILES.values())
        applied = self._applied_secrets.get((district.namespace, str(name)))
        return applied is not None and not drift.needs_apply(applied, body)

    def _converge(self, manifest: Mapping[str, Any], fresh: bool,
                  observed: status.Observed) -> dict[str, Any] | None:
        stamped = drift.with_hash(manifest)
        meta = stamped["metadata"]
        live = None if fresh else self.kube.get(stamped["kind"], meta["namespace"], meta["name"])
        if stamped["kind"] == "Secret":
            self._applied_secrets[(meta["namespace"], meta["name"])] = stamped
        if drift.needs_apply(stamped, live):
            applied = self._apply(stamped, observed)
            if applied is not None:
                live = applied
            else:
                log.warning("apply %s %s refused: %s", stamped["kind"], meta["name"],
                            observed.apply_errors[stamped["kind"]])
                if live is None:
                    live = self.kube.get(stamped["kind"], meta["namespace"], meta["name"])
        self._remember(live)
        return live

    def _apply(self, stamped: Mapping[str, Any], observed: status.Observed
               ) -> dict[str, Any] | None:
        """Server-side apply; None when the API server refuses it for good (e.g. an invalid
        resize), the refusal recorded in observed for the status while the rest goes on.
        Transient failures (5xx, 429) raise, for the caller's retry."""
        try:
            return self.kube.apply(stamped)
        except api.ApiError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise
            observed.apply_errors[stamped["kind"]] = exc.message
            return None

    def _remove_disabled_jobs(self, district: District) -> None:
        for job in set(names.JOBS) - set(enabled_jobs(district)):
            name = names.cronjob(district.name, job)
            live = self.kube.get("CronJob", district.namespace, name)
            owners = (live or {}).get("metadata", {}).get("ownerReferences") or []
            if live and any(o.get("uid") == district.uid for o in owners):
                self.kube.delete("CronJob", district.namespace, name)

    def _write_status(self, body: Mapping[str, Any], district: District,
                      observed: status.Observed, previous: dict[str, Any]) -> dict[str, Any]:
        desired = status.compute_status(district, observed, previous, self.clock())
        patch = status.status_patch(previous, desired)
        if patch:
            try:
                self.kube.patch_district_status(district.namespace, district.name, patch)
            except api.NotFoundError:
                # Deleted while we worked: the garbage collector takes what we just applied.
                log.info("district %s/%s is gone", district.namespace, district.name)
                return desired
            self._emit_transitions(body, previous, desired)
        self._statuses[district.uid] = desired
        return desired

    def _emit_transitions(self, body: Mapping[str, Any], previous: Mapping[str, Any],
                          desired: Mapping[str, Any],
                          skip_reasons: frozenset[str] = frozenset()) -> None:
        for change in status.transitions(previous.get("conditions") or [],
                                         desired.get("conditions") or []):
            if change.type == status.READY and change.status != "True":
                continue  # the failing part has its own Event
            if change.reason in skip_reasons:
                continue
            self.kube.event(body, "Warning" if change.warning else "Normal",
                            change.reason, f"{change.type}: {change.message}")

    # ---- finished Jobs ----------------------------------------------------------------------

    def record_job(self, job_body: Mapping[str, Any]) -> bool:
        """Copy a finished Job's result into its District's status; True when it was recorded."""
        meta = job_body.get("metadata", {})
        labels = meta.get("labels") or {}
        district_name = labels.get(names.LABEL_DISTRICT)
        job_kind = labels.get(names.LABEL_COMPONENT)
        namespace = meta.get("namespace", "")
        if not district_name or job_kind not in names.JOBS:
            return False
        body = self.kube.get(names.KIND, namespace, district_name)
        if body is None:
            return False
        district = parse_district(body)
        report = self._job_report(job_kind, job_body)
        with self._lock(district.key):
            remembered = self._statuses.get(district.uid)
            previous = dict(remembered if remembered is not None else body.get("status") or {})
            desired = status.apply_job_report(previous, report, meta["name"],
                                              district.generation, self.clock())
            patch = status.status_patch(previous, desired)
            if patch:
                self.kube.patch_district_status(namespace, district_name, patch)
                # Failures and unrecognized uploads get their own Event in _announce.
                self._emit_transitions(body, previous, desired, frozenset(
                    {"JobFailed", "BackupFailed", "UnrecognizedUploads"}))
            self._statuses[district.uid] = desired
            self._announce(body, district, report, meta["name"], previous)
            self.kube.merge_patch("Job", namespace, meta["name"], {"metadata": {
                "annotations": {names.ANNOTATION_RESULT_RECORDED: report.outcome}}})
        return True

    def _job_report(self, job_kind: str, job_body: Mapping[str, Any]) -> status.JobReport:
        meta = job_body["metadata"]
        pods = self.kube.list("Pod", meta["namespace"],
                              f"{names.LABEL_JOB_NAME}={meta['name']}")
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
        message, ended = status.last_termination(pods)
        fallback = ended or "the job failed without a result"
        succeeded = any(c.get("type") == "Complete" and c.get("status") == "True"
                        for c in (job_body.get("status") or {}).get("conditions") or [])
        return status.parse_termination_message(job_kind, message, succeeded, fallback)

    def _announce(self, body: Mapping[str, Any], district: District, report: status.JobReport,
                  job_name: str, previous: Mapping[str, Any]) -> None:
        """Events and webhook posts for what needs people: once per finished Job."""
        messages: list[tuple[str, str, dict[str, Any]]] = []
        if report.outcome == "Failed":
            messages.append(("JobFailed", f"{report.job} job {job_name} failed: {report.message}",
                             {}))
        waiting_before = set(previous.get("uploadsNeedingAttention") or [])
        fresh_unrecognized = [str(e) for e in report.result.get("unrecognized") or []
                              if str(e) not in waiting_before]
        if fresh_unrecognized:
            messages.append(("UploadsNeedAttention",
                             f"upload(s) not recognized, waiting for staff: "
                             f"{', '.join(fresh_unrecognized)}",
                             {"epochs": fresh_unrecognized}))
        if not messages:
            return
        url = None
        if district.webhook_secret is not None and self.notifier is not None:
            url, _ = self._secret_value(district.namespace, district.webhook_secret, "Webhook")
        for reason, text, extra in messages:
            self.kube.event(body, "Warning", reason, text)
            if url:
                self.notifier.submit(url.strip(), {  # type: ignore[union-attr]
                    "district": district.name, "namespace": district.namespace,
                    "event": reason, "job": job_name, "jobKind": report.job,
                    "outcome": report.outcome, "message": text, **extra})
