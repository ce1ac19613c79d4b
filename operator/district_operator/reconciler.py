"""One District's reconcile: read what is, build what should be, apply only the difference."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from district_operator import (
    api,
    builders,
    drift,
    keys,
    names,
    overdue,
    podtouch,
    rotation,
    rotationstep,
    routing,
    secretrefs,
    status,
)
from district_operator.builders.jobs import enabled_jobs
from district_operator.conditions import POSTED, ConditionType, Reason
from district_operator.events import emit_transitions
from district_operator.gatewaystate import GatewayState
from district_operator.model import District, SecretKeyRef, ServiceMode, parse_district
from district_operator.notifications import Notifier
from district_operator.routepublisher import RoutePublisher
from district_operator.watchcache import DistrictMemory, WatchCache

log = logging.getLogger(__name__)

# Event reason (and webhook `event`) when lost host keys were replaced on request.
EVENT_HOST_KEYS_REPLACED: Final = "HostKeysReplaced"
# The children whose state feeds the status; only the fields the status reads are remembered.
STATUS_CHILDREN = ("PersistentVolumeClaim", "Deployment", "Service")
# Either pair of keys in spec.integration.sif.authSecretRef's Secret is a usable credential.
SIF_CREDENTIAL_PAIRS = (frozenset({"username", "password"}), frozenset({"tls.crt", "tls.key"}))


def _trim(kind: str, body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if body is None:
        return None
    spec, state = body.get("spec") or {}, body.get("status") or {}
    if kind == "PersistentVolumeClaim":
        return {"spec": {"resources": spec.get("resources") or {}},
                "status": {k: state[k] for k in ("phase", "capacity") if k in state}}
    if kind == "Deployment":
        return {"status": {"availableReplicas": state.get("availableReplicas", 0)}}
    # clusterIP: the gateway's way to the District in shared mode (routing.backend)
    return {"spec": {"type": spec.get("type"), "clusterIP": spec.get("clusterIP")},
            "status": {"loadBalancer": state.get("loadBalancer") or {}}}


def _stub_body(district: District) -> dict[str, Any]:
    """Enough of a District for an Event's involvedObject."""
    return {"metadata": {"name": district.name, "namespace": district.namespace,
                         "uid": district.uid}}


def _secret_problem(found: secretrefs.SecretValue, ref: SecretKeyRef, namespace: str,
                    purpose: str, holds: str, not_found: Reason, key_missing: Reason
                    ) -> status.SecretProblem | None:
    if not found.secret_exists:
        return status.SecretProblem(
            not_found, f"Secret {ref.name} (named in the District for {purpose}) does not "
                       f"exist in namespace {namespace}")
    if found.value is None:
        return status.SecretProblem(
            key_missing, f"Secret {ref.name} has no key {ref.key!r} (it must hold the {holds})")
    return None


def _routed(verdict: routing.Verdict | None) -> status.Condition:
    """Routed from the routing table's verdict (None: its shard is not written yet)."""
    if verdict is None:
        return status.Condition(ConditionType.ROUTED, "Unknown", Reason.PUBLISHING,
                                "its routing entry waits for its shard's first write")
    return status.Condition(ConditionType.ROUTED, "True" if verdict.routed else "False",
                            verdict.reason, verdict.message)


@dataclass(frozen=True)
class HostKeysSeen:
    """The host-key Secret as this reconcile left it (None: it is gone and was not replaced),
    and whether it was just replaced on request."""

    secret: rotation.HostKeySecret | None = None
    replaced: bool = False


class Reconciler:
    """Turns Districts into their children and status; safe to call from many threads at once."""

    def __init__(self, kube: api.Kube, inputs: builders.BuildInputs, cache: WatchCache,
                 clock: status.Clock = status.utc_now, notifier: Notifier | None = None,
                 gateway: GatewayState | None = None,
                 service_mode: ServiceMode = "dedicated",
                 routes: RoutePublisher | None = None) -> None:
        self.kube = kube
        self.inputs = inputs
        self.cache = cache
        self.clock = clock
        self.notifier = notifier  # webhook posts: UploadsOverdue (overdue.py), the host keys
        self.routes = routes  # the gateway's routing table (shared mode); None: all dedicated
        if routes is not None:
            routes.on_verdicts = self.refresh_routed
        self.gateway = gateway  # the shared SSH gateway (None or unconfigured: not installed)
        self.service_mode = service_mode  # spec.service.mode of a District that does not say

    # ---- spec.service.mode shared -----------------------------------------------------------

    def _shared(self, district: District) -> builders.SharedMode | None:
        """What the children need of the gateway in shared mode; None in dedicated mode."""
        if routing.service_mode(district, self.service_mode) != "shared":
            return None
        config = self.gateway.gateway if self.gateway is not None else None
        if self.gateway is None or config is None:
            return builders.SharedMode()
        self.gateway.load()
        return builders.SharedMode(gateway_namespace=config.namespace, gateway_name=config.name,
                                   proxy_from=config.proxy_from,
                                   gateway_public_key=self.gateway.public_key)

    def _gateway_seen(self, shared: builders.SharedMode | None) -> status.GatewaySeen | None:
        if shared is None:
            return None
        return self.gateway.seen if self.gateway is not None else status.GatewaySeen()

    def gateway_changed(self, key_changed: bool) -> None:
        """The gateway's address or host keys changed (or its key pair: then the shared-mode
        Districts' authorized-keys Secrets must carry the new public key): bring every
        shared-mode District this process knows in line."""
        for (namespace, name), memory in self.cache.all():
            with memory.lock:
                district, observed = memory.district, memory.observed
                if district is None or observed is None or observed.gateway is None:
                    continue
                if not key_changed and memory.status is not None:
                    observed.gateway = self._gateway_seen(self._shared(district))
                    self._write_status(memory, _stub_body(district), district, observed,
                                       memory.status)
                    continue
            if key_changed:
                body = self.kube.get(names.KIND, namespace, name)
                if body is not None and not body["metadata"].get("deletionTimestamp"):
                    self.reconcile(body)

    # ---- inputs from other objects ----------------------------------------------------------

    def _host_keys(self, memory: DistrictMemory, district: District, fresh: bool,
                   previous: Mapping[str, Any]) -> HostKeysSeen:
        """The host-key files and their rotation, one rotation step taken when one is due.

        Created once; a Secret that exists is never regenerated. A Secret that is gone after
        keys were published is reported, not replaced, unless spec.hostKeys.rotate was raised
        past the rotation the status shows (the explicit way to accept new keys).
        """
        name = names.host_keys_secret(district.name)
        secret = None if fresh else self.kube.get("Secret", district.namespace, name)
        replaced = False
        if secret is None:
            if previous.get("hostKeys"):
                shown = int((previous.get("hostKeyRotation") or {}).get("rotation") or 0)
                if district.host_keys.rotate <= shown:
                    return HostKeysSeen()
                replaced = True
            manifest = builders.host_keys_secret(district, keys.generate_host_keys(),
                                                 rotation.initial_annotations(district))
            try:
                secret = self.kube.create(manifest)
            except api.AlreadyExistsError:
                replaced = False
                secret = self.kube.get("Secret", district.namespace, name)
                if secret is None:
                    raise
        files = {k: secretrefs.decode(secret, k) or "" for k in (secret.get("data") or {})}
        missing = [t for t, f in names.HOST_KEY_FILES.items() if not files.get(f)]
        if missing:
            # Only a key that is absent is added; the ones districts already trust stay.
            generated = keys.generate_host_keys()
            added = {}
            for key_type in missing:
                file_name = names.HOST_KEY_FILES[key_type]
                for part in (file_name, file_name + ".pub"):
                    added[part] = base64.b64encode(generated[part].encode()).decode()
            secret = self.kube.merge_patch("Secret", district.namespace, name, {"data": added})
        secret, held = rotationstep.take_due_step(
            self.kube, district.namespace, name, secret, district, self.clock(),
            f"district {district.namespace}/{district.name}")
        memory.remember(secret)
        return HostKeysSeen(secret=held, replaced=replaced)

    def _key_check(self, district: District) -> tuple[keys.KeyCheck, status.SecretProblem | None]:
        sources = [(f"spec.authorizedKeys[{i}]", line)
                   for i, line in enumerate(district.authorized_keys)]
        problem = None
        ref = district.authorized_keys_secret
        if ref is not None:
            found = secretrefs.read(self.kube, district.namespace, ref)
            problem = _secret_problem(found, ref, district.namespace, "keys", "value",
                                      Reason.KEYS_SECRET_NOT_FOUND,
                                      Reason.KEYS_SECRET_KEY_MISSING)
            if found.value is not None:
                sources += [(f"Secret {ref.name} line {n}", line)
                            for n, line in enumerate(found.value.splitlines(), start=1)]
        return keys.check_keys(sources), problem

    def _database_problem(self, district: District, ref: SecretKeyRef | None, needed_for: str,
                          cache: dict[str, dict[str, Any] | None]
                          ) -> status.SecretProblem | None:
        if ref is None:
            if needed_for == "processing" and district.processing.formats:
                return status.SecretProblem(
                    Reason.NO_DATABASE, "spec.processing.databaseSecretRef is not set: "
                                        "recognized uploads cannot be imported")
            return None
        found = secretrefs.read(self.kube, district.namespace, ref, cache)
        problem = _secret_problem(found, ref, district.namespace, needed_for,
                                  "libpq connection URI", Reason.DATABASE_SECRET_NOT_FOUND,
                                  Reason.DATABASE_SECRET_KEY_MISSING)
        if problem is None and found.value is not None and "://" not in found.value \
                and "=" not in found.value:
            problem = status.SecretProblem(
                Reason.DATABASE_SECRET_INVALID,
                f"Secret {ref.name} key {ref.key!r} is not a libpq URI or connection string")
        return problem

    def _token_problem(self, district: District, cache: dict[str, dict[str, Any] | None]
                       ) -> status.SecretProblem | None:
        """The docviewer's token key Secret: present with its key, or the pod cannot start.
        The key's content is the job's to check (it names the bad line, never echoing it)."""
        docviewer = district.downloads.docviewer
        if docviewer is None:
            return None
        ref = docviewer.token_secret
        return _secret_problem(secretrefs.read(self.kube, district.namespace, ref, cache), ref,
                               district.namespace, "the docviewer's URL tokens",
                               "token key(s), one a line", Reason.TOKEN_SECRET_NOT_FOUND,
                               Reason.TOKEN_SECRET_KEY_MISSING)
    def _pull_problem(self, district: District,
                      cache: dict[str, dict[str, Any] | None]) -> status.SecretProblem | None:
        """Why the pull's Secrets cannot be mounted or used (its pod would not even start)."""
        sif = district.integration.pull
        if sif is None:
            return None
        namespace = district.namespace
        if sif.auth_secret not in cache:
            cache[sif.auth_secret] = self.kube.get("Secret", namespace, sif.auth_secret)
        auth = cache[sif.auth_secret]
        if auth is None:
            return status.SecretProblem(
                Reason.SIF_AUTH_SECRET_NOT_FOUND,
                f"Secret {sif.auth_secret} (named in spec.integration.sif.authSecretRef for the "
                f"zone credentials) does not exist in namespace {namespace}")
        present = {k for k in (auth.get("data") or {})
                   if (secretrefs.decode(auth, k) or "").strip()}
        if not any(pair <= present for pair in SIF_CREDENTIAL_PAIRS):
            return status.SecretProblem(
                Reason.SIF_AUTH_SECRET_INVALID,
                f"Secret {sif.auth_secret} holds neither username and password (HTTP basic) "
                f"nor tls.crt and tls.key (a client certificate); it has: "
                f"{', '.join(sorted(present)) or 'no keys'}")
        if sif.ca is not None:
            found = secretrefs.read(self.kube, namespace, sif.ca, cache)
            return _secret_problem(found, sif.ca, namespace, "the zone's CA", "CA bundle (PEM)",
                                   Reason.SIF_CA_SECRET_NOT_FOUND,
                                   Reason.SIF_CA_SECRET_KEY_MISSING)
        return None

    # ---- the reconcile ----------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Bring one District's children and status in line; returns the status left behind."""
        district = parse_district(body)
        memory = self.cache.memory(district.key)
        with memory.lock:
            memory.adopt(district.uid)
            self.cache.refer(memory, district)
            remembered = memory.status
            previous = dict(remembered if remembered is not None else body.get("status") or {})
            # A District never reconciled has no children worth reading: apply straight away.
            fresh = remembered is None and "observedGeneration" not in previous
            observed = status.Observed()
            seen = self._host_keys(memory, district, fresh, previous)
            if seen.secret is None:
                observed.host_keys_missing = True
            else:
                observed.host_keys = keys.describe_host_keys(seen.secret.files)
                observed.next_host_keys = keys.describe_host_keys(seen.secret.files,
                                                                  names.NEXT_HOST_KEY_FILES)
                observed.rotation = rotation.state(seen.secret, district)
            if seen.replaced:
                self._announce(body, district, EVENT_HOST_KEYS_REPLACED, "Warning",
                               f"the host-key Secret {names.host_keys_secret(district.name)} "
                               "was gone and spec.hostKeys.rotate was raised: new host keys "
                               "were generated; every client must be given the new "
                               "known_hosts lines (status.knownHosts)")
            observed.key_check, observed.keys_problem = self._key_check(district)
            if observed.key_check.rejected:
                log.info("district %s/%s: %d bad key(s) left out", district.namespace,
                         district.name, len(observed.key_check.rejected))
            secrets: dict[str, dict[str, Any] | None] = {}  # processing and backups share one
            observed.processing_database = self._database_problem(
                district, district.processing.database, "processing", secrets)
            observed.backups_database = self._database_problem(
                district, district.backups.database, "backups", secrets)
            observed.pull_secrets = self._pull_problem(district, secrets)
            observed.downloads_token = self._token_problem(district, secrets)
            shared = self._shared(district)
            observed.gateway = self._gateway_seen(shared)
            children = builders.desired_children(district, self.inputs,
                                                 observed.key_check.authorized_keys_file(),
                                                 shared)
            for manifest in children:
                live = self._converge(memory, manifest, fresh, observed)
                self._observe(observed, manifest["kind"], live)
            if not fresh:
                self._remove_disabled_jobs(district)
                self._remove_pull(memory, district)
            observed.routed = self._route(district, observed)
            memory.district = district
            memory.observed = observed
            return self._write_status(memory, body, district, observed, previous)

    def _route(self, district: District, observed: status.Observed) -> status.Condition | None:
        """The District's entry in the gateway's routing table, and Routed as it stands."""
        if self.routes is None or self.routes.mode(district) == "dedicated":
            if self.routes is not None:
                self.routes.release(district.key)
            return None
        if self.routes.gateway is None:
            return _routed(routing.gateway_not_installed(district))
        host_keys = observed.host_keys + observed.next_host_keys
        if observed.host_keys_missing:
            # Unknown now: the gateway keeps checking the keys it was given.
            held = self.routes.entry(district.key)
            host_keys = () if held is None else tuple(
                keys.HostKey(line.split()[0], line, "") for line in held.host_keys)
        cluster_ip = ((observed.service or {}).get("spec") or {}).get("clusterIP")
        check = observed.key_check or keys.KeyCheck((), ())
        entry = routing.route_entry(district, check.accepted, host_keys, cluster_ip)
        return _routed(self.routes.claim(district, entry))

    def refresh_routed(self, changed: list[tuple[str, str]]) -> None:
        """After a routing shard was written: Routed of each District whose verdict changed."""
        if self.routes is None:
            return
        for key in changed:
            memory = self.cache.existing(key)
            if memory is None:
                continue
            with memory.lock:
                district, observed, previous = memory.district, memory.observed, memory.status
                if district is None or observed is None or previous is None or \
                        observed.routed is None:
                    continue
                verdict = self.routes.verdict(key)
                if verdict is None:
                    continue
                observed.routed = _routed(verdict)
                try:
                    self._write_status(memory, _stub_body(district), district, observed,
                                       previous)
                except api.ApiError as exc:  # the next resync writes it
                    log.warning("district %s/%s: Routed not written: %s", key[0], key[1], exc)

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
        memory = self.cache.existing(key)
        if memory is None:
            return False
        # Under the lock: a reconcile of this District in progress finishes first, and then its
        # result is what the event is compared with.
        with memory.lock:
            district, observed = memory.district, memory.observed
            if district is None or observed is None:
                return False
            if kind == "Secret":
                return self._secret_unchanged(memory, district, body)
            wanted = next((m for m in builders.desired_children(district, self.inputs, "",
                                                                self._shared(district))
                           if m["kind"] == kind and m["metadata"]["name"] == meta.get("name")),
                          None)
            if wanted is None:
                return False
            observed.apply_errors.pop(kind, None)
            live: Mapping[str, Any] | None = body
            stamped = drift.with_hash(wanted)
            if drift.needs_apply(stamped, body):
                applied = self._apply(stamped, observed)
                if applied is not None:
                    live = applied
                memory.remember(live)
            if kind in STATUS_CHILDREN:
                self._observe(observed, kind, live)
                previous = memory.status
                if previous is not None:
                    self._write_status(memory, _stub_body(district), district, observed,
                                       previous)
            return True

    @staticmethod
    def _secret_unchanged(memory: DistrictMemory, district: District,
                          body: Mapping[str, Any]) -> bool:
        name = body.get("metadata", {}).get("name")
        if name == names.host_keys_secret(district.name):
            data = body.get("data") or {}
            # A Secret restored after it was reported missing is news: reconcile.
            missing = memory.observed is not None and memory.observed.host_keys_missing
            return not missing and all(data.get(f) for f in names.HOST_KEY_FILES.values())
        applied = memory.applied_secrets.get(str(name))
        return applied is not None and not drift.needs_apply(applied, body)

    def _converge(self, memory: DistrictMemory, manifest: Mapping[str, Any], fresh: bool,
                  observed: status.Observed) -> dict[str, Any] | None:
        stamped = drift.with_hash(manifest)
        meta = stamped["metadata"]
        live = None if fresh else self.kube.get(stamped["kind"], meta["namespace"], meta["name"])
        if stamped["kind"] == "Secret":
            memory.applied_secrets[meta["name"]] = stamped
        if drift.needs_apply(stamped, live):
            existed = live is not None
            applied = self._apply(stamped, observed)
            if applied is not None:
                if existed and stamped["kind"] == "Secret":
                    self._secret_changed(stamped)
                live = applied
            else:
                log.warning("apply %s %s refused: %s", stamped["kind"], meta["name"],
                            observed.apply_errors[stamped["kind"]])
                if live is None:
                    live = self.kube.get(stamped["kind"], meta["namespace"], meta["name"])
        memory.remember(live)
        return live

    def _secret_changed(self, stamped: Mapping[str, Any]) -> None:
        """A changed authorized-keys Secret: the server pods are touched so their kubelet
        rewrites the keys volume now rather than on its next periodic sync (up to a minute),
        during which a new key would be refused (and, behind the gateway, counted towards a
        ban of a client the gateway already let in)."""
        meta = stamped["metadata"]
        district = (meta.get("labels") or {}).get(names.LABEL_DISTRICT, "")
        if not district or meta["name"] != names.authorized_keys_secret(district):
            return
        revision = (meta.get("annotations") or {}).get(names.ANNOTATION_APPLIED_HASH, "")
        podtouch.touch_pods(self.kube, meta["namespace"], names.server_selector(district),
                            names.ANNOTATION_KEYS_REVISION, revision)

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
        # The pull's CronJob goes with its policy (_remove_pull).
        for job in set(names.JOBS) - set(enabled_jobs(district)) - {names.JOB_PULL}:
            name = names.cronjob(district.name, job)
            live = self.kube.get("CronJob", district.namespace, name)
            owners = (live or {}).get("metadata", {}).get("ownerReferences") or []
            if live and any(o.get("uid") == district.uid for o in owners):
                self.kube.delete("CronJob", district.namespace, name)

    def _remove_pull(self, memory: DistrictMemory, district: District) -> None:
        """Back to push mode: the pull's CronJob and egress policy go."""
        if district.integration.pull is not None:
            return
        before = memory.district
        if before is not None and before.integration.pull is None:
            # An earlier reconcile in this process saw push already and removed them: no reads
            # on every resync of the many Districts that never pull.
            return
        for kind, name in (("CronJob", names.cronjob(district.name, names.JOB_PULL)),
                           ("NetworkPolicy", names.pull_network_policy(district.name))):
            live = self.kube.get(kind, district.namespace, name)
            owners = (live or {}).get("metadata", {}).get("ownerReferences") or []
            if live and any(o.get("uid") == district.uid for o in owners):
                self.kube.delete(kind, district.namespace, name)

    def _write_status(self, memory: DistrictMemory, body: Mapping[str, Any],
                      district: District, observed: status.Observed,
                      previous: dict[str, Any]) -> dict[str, Any]:
        desired = status.compute_status(district, observed, previous, self.clock())
        patch = status.status_patch(previous, desired)
        if patch:
            try:
                self.kube.patch_district_status(district.namespace, district.name, patch)
            except api.NotFoundError:
                # Deleted while we worked: the garbage collector takes what we just applied,
                # and nothing of it stays in memory.
                log.info("district %s/%s is gone", district.namespace, district.name)
                self.cache.forget(district.namespace, district.name, district.uid)
                if self.routes is not None:
                    self.routes.release(district.key)
                return desired
            emit_transitions(self.kube, body, previous, desired)
            self._post_transitions(district, previous, desired)
            overdue.announce(self.kube, self.notifier, district, previous, desired)
        memory.status = desired
        return desired

    # ---- news: the webhook ------------------------------------------------------------------

    def _webhook(self, district: District) -> str | None:
        if district.webhook_secret is None or self.notifier is None:
            return None
        url = secretrefs.read(self.kube, district.namespace, district.webhook_secret).value
        return url.strip() if url else None

    def _post_transitions(self, district: District, previous: Mapping[str, Any],
                          desired: Mapping[str, Any]) -> None:
        """A webhook post for each change of a condition in POSTED (the host keys' steps)."""
        changes = [c for c in status.transitions(previous.get("conditions") or [],
                                                 desired.get("conditions") or [])
                   if c.type in POSTED]
        if not changes:
            return
        url = self._webhook(district)
        if url is None or self.notifier is None:
            return
        for change in changes:
            self.notifier.submit(url, {
                "district": district.name, "namespace": district.namespace,
                "event": change.reason, "condition": change.type, "status": change.status,
                "message": change.message, "hostKeys": desired.get("hostKeys") or [],
                "nextHostKeys": desired.get("nextHostKeys") or []})

    def _announce(self, body: Mapping[str, Any], district: District, reason: str,
                  event_type: str, message: str) -> None:
        """An Event and a webhook post for one step no condition change tells of."""
        self.kube.event(body, event_type, reason, message)
        url = self._webhook(district)
        if url is not None and self.notifier is not None:
            self.notifier.submit(url, {"district": district.name,
                                       "namespace": district.namespace, "event": reason,
                                       "message": message})
