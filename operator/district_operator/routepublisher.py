"""The gateway's routing table in memory, written to its shard ConfigMaps when it changes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from district_contract import routes

from district_operator import api, metrics, names, podtouch, routing
from district_operator.config import GatewayConfig
from district_operator.model import District, InvalidDistrictError, ServiceMode, parse_district
from district_operator.routing import Claim, DistrictKey, Verdict

log = logging.getLogger(__name__)

# Changes within this window after the first one go out in one write per shard.
DEBOUNCE_SECONDS = 0.1
# After a failed write, the shard is tried again this much later (doubling, up to the cap).
RETRY_SECONDS = 1.0
# The gateway pods are touched a second time this long after a write: the kubelet learns of
# the ConfigMap and of the pod through two watches, and a pod sync that ran before the
# ConfigMap's event reached it would leave the old shard until its next periodic sync.
TOUCH_AGAIN_SECONDS = 2.0
# How often the shard ConfigMaps are read back and compared with what was written (the
# operator's resync interval is given in its place).
VERIFY_SECONDS = 300.0
# A reconcile waits this long at most for the shards to be read back on start, so that a
# restarted operator finds every District's verdict as published and writes no status for it.
LOAD_WAIT_SECONDS = 10.0
RETRY_CAP_SECONDS = 30.0
# Called with the Districts whose verdict changed once their shard is written.
VerdictsChanged = Callable[[list[DistrictKey]], None]


@dataclass
class _Shard:
    written: bytes | None = None  # what the ConfigMap holds (None: no ConfigMap)
    claims: dict[DistrictKey, Claim] = field(default_factory=dict)
    # District -> monotonic time of its first change not yet written (the latency metric)
    pending_since: dict[DistrictKey, float] = field(default_factory=dict)


class RoutePublisher:
    """Every shared-mode District's routing entry, and the shards that hold them.

    The reconciler calls `claim`/`release` on each District change; a thread writes the
    shards that changed (debounced: a burst of changes is one write per shard), skipping
    identical bytes, then touches the gateway pods (names.ANNOTATION_ROUTES_REVISION) so the
    kubelet refreshes their ConfigMap volume at once. On start the table is first read back
    from the ConfigMaps, so a restart writes nothing until something really changes.
    """

    def __init__(self, kube: api.Kube, gateway: GatewayConfig | None,
                 default_mode: ServiceMode, namespaces: tuple[str, ...] = (),
                 debounce: float = DEBOUNCE_SECONDS,
                 verify_seconds: float = VERIFY_SECONDS) -> None:
        self.kube = kube
        self.gateway = gateway
        self.default_mode = default_mode
        self.namespaces: tuple[str | None, ...] = namespaces or (None,)
        self.debounce = debounce
        self.verify_seconds = verify_seconds
        self.on_verdicts: VerdictsChanged | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._shards: dict[int, _Shard] = {}
        self._where: dict[DistrictKey, int] = {}  # District -> the shard of its claim
        self._dirty: set[int] = set()
        self._verdicts: dict[DistrictKey, Verdict] = {}
        self._loaded = threading.Event()
        self._stopping = False
        self._touch_again_at: float | None = None
        self._verify_at = 0.0
        self._thread = threading.Thread(target=self._run, name="routes", daemon=True)
        # Status writes after a shard write run beside the publisher, never holding it up.
        self._statuses = ThreadPoolExecutor(max_workers=4, thread_name_prefix="routed")

    # ---- the reconciler's side ----------------------------------------------------------

    def mode(self, district: District) -> ServiceMode:
        return routing.service_mode(district, self.default_mode)

    def claim(self, district: District, entry: routes.RouteEntry) -> Verdict | None:
        """Put the District's entry in the table; its verdict as last written (None while
        its shard has not been written with it once)."""
        problem = routing.entry_problem(entry)
        if problem is not None:
            self.release(district.key)
            return routing.invalid(problem)
        shard = routes.shard_of(entry.login)
        claim = Claim(entry, district.created_at)
        if self._thread.is_alive():
            self._loaded.wait(LOAD_WAIT_SECONDS)
        with self._lock:
            before = self._where.get(district.key)
            if before is not None and before != shard:
                self._drop(district.key, before)
            held = self._shards.setdefault(shard, _Shard())
            if held.claims.get(district.key) != claim:
                held.claims[district.key] = claim
                held.pending_since.setdefault(district.key, time.monotonic())
                self._where[district.key] = shard
                self._mark(shard)
            return self._verdicts.get(district.key)

    def release(self, key: DistrictKey) -> None:
        """The District left shared mode or is gone: its entry leaves its shard."""
        with self._lock:
            shard = self._where.get(key)
            if shard is not None:
                self._drop(key, shard)
            self._verdicts.pop(key, None)

    def verdict(self, key: DistrictKey) -> Verdict | None:
        with self._lock:
            return self._verdicts.get(key)

    def entry(self, key: DistrictKey) -> routes.RouteEntry | None:
        """The District's entry in the table (None: it has none)."""
        with self._lock:
            shard = self._where.get(key)
            claim = None if shard is None else self._shards[shard].claims.get(key)
            return None if claim is None else claim.entry

    def _drop(self, key: DistrictKey, shard: int) -> None:
        held = self._shards.get(shard)
        if held is not None and held.claims.pop(key, None) is not None:
            held.pending_since.pop(key, None)
            self._mark(shard)
        self._where.pop(key, None)

    def _mark(self, shard: int) -> None:
        self._dirty.add(shard)
        self._wake.notify()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.gateway is not None:
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._statuses.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        delay = RETRY_SECONDS
        while True:
            try:
                self._load()
                break
            except Exception as exc:  # the API down at start: the table waits, nothing lost
                log.warning("reading the routing ConfigMaps failed (%s); retrying", exc)
            if self._sleep(delay):
                return
            delay = min(delay * 2, RETRY_CAP_SECONDS)
        delay = RETRY_SECONDS
        self._verify_at = time.monotonic() + self.verify_seconds
        while True:
            with self._lock:
                while not self._dirty and not self._stopping:
                    due = min(t for t in (self._touch_again_at, self._verify_at) if t is not None)
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                if self._stopping:
                    return
                quiet = not self._dirty
            try:
                if quiet:
                    self._timers()
                    continue
                if self._sleep(self.debounce):
                    return
                published = self._publish()
            except Exception:  # an API client error: the shards stay dirty and are retried
                log.exception("publishing the routing shards failed")
                published = False
            if published:
                delay = RETRY_SECONDS
            else:
                if self._sleep(delay):
                    return
                delay = min(delay * 2, RETRY_CAP_SECONDS)

    def _timers(self) -> None:
        now = time.monotonic()
        if self._touch_again_at is not None and self._touch_again_at <= now:
            self._touch_again_at = None
            self._touch_pods(again=True)
        if self._verify_at <= now:
            self._verify_at = now + self.verify_seconds
            self._verify()

    def _verify(self) -> None:
        """Every shard as published is read back: one deleted or edited by hand (or written by
        a standby replica's resync from an older listing) is written again from the table."""
        live = self._published()
        with self._lock:
            for shard, held in self._shards.items():
                if held.written is not None and live.get(shard) != held.written:
                    log.warning("routing shard %d differs from what was written: rewriting it",
                                shard)
                    held.written = live.get(shard)
                    self._mark(shard)

    def _published(self) -> dict[int, bytes | None]:
        """Each shard ConfigMap's bytes as the API server has them now (None: no shard data)."""
        assert self.gateway is not None
        live: dict[int, bytes | None] = {}
        for body in self.kube.list("ConfigMap", self.gateway.namespace,
                                   routing.routes_selector(self.gateway.name)):
            shard = routing.shard_of_configmap(self.gateway.name, body["metadata"]["name"])
            if shard is not None:
                live[shard] = routing.configmap_data(body, shard)
        return live

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early only to stop; True when stopping."""
        with self._lock:
            self._wake.wait_for(lambda: self._stopping, timeout=seconds)
            return self._stopping

    # ---- reading back and writing -----------------------------------------------------------

    def _load(self) -> None:
        """The shards as published, as the table's starting point: the Districts still
        there and in shared mode keep their entries until their reconcile says otherwise."""
        assert self.gateway is not None
        gateway = self.gateway
        existing = self._published()
        living: dict[DistrictKey, District] = {}
        for namespace in self.namespaces:
            for body in self.kube.list(names.KIND, namespace):
                try:
                    district = parse_district(body)
                except InvalidDistrictError:
                    continue
                if self.mode(district) == "shared" and \
                        not body["metadata"].get("deletionTimestamp"):
                    living[district.key] = district
        created = {key: d.created_at for key, d in living.items()}
        known: list[DistrictKey] = []
        with self._lock:
            for shard, data in existing.items():
                if data is None:
                    continue
                held = self._shards.setdefault(shard, _Shard())
                held.written = data
                try:
                    claims = routing.claims_of_shard_data(data, created)
                except routes.RoutesError as exc:
                    log.warning("routing ConfigMap %s is not valid routing data (%s): it "
                                "will be rewritten",
                                names.gateway_routes_configmap(gateway.name, shard), exc)
                    self._mark(shard)
                    continue
                for claim in claims:
                    if claim.key not in living:
                        self._mark(shard)  # gone while the operator was away
                    elif claim.key not in self._where:  # a reconcile may have been first
                        held.claims[claim.key] = claim
                        self._where[claim.key] = shard
                plan = routing.plan_shard(shard, held.claims.values())
                if plan.data == data:
                    self._verdicts.update(plan.verdicts)
                    known += plan.verdicts
                else:
                    self._mark(shard)
            self._count()
        self._loaded.set()
        # A reconcile that gave up waiting found no verdict yet (Routed Unknown Publishing).
        self._tell(known)

    def _publish(self) -> bool:
        """Write every dirty shard whose bytes changed; False when a write failed (retried)."""
        assert self.gateway is not None
        gateway = self.gateway
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            work = [(shard, self._shards[shard]) for shard in sorted(dirty)]
            plans = [(shard, held, routing.plan_shard(shard, held.claims.values()),
                      dict(held.pending_since)) for shard, held in work]
        wrote = False
        failed: set[int] = set()
        changed: list[DistrictKey] = []
        for shard, held, plan, pending in plans:
            # An empty shard that was never written needs no ConfigMap.
            kept = bool(plan.entries) or held.written is not None
            if plan.data != held.written and kept:
                try:
                    self.kube.apply(routing.configmap(gateway.name, gateway.namespace, shard,
                                                      plan.data))
                except api.ApiError as exc:
                    log.warning("writing routing shard %d failed: %s", shard, exc)
                    failed.add(shard)
                    continue
                metrics.ROUTE_SHARD_WRITES.inc()
                wrote = True
            done = time.monotonic()
            with self._lock:
                if kept:
                    held.written = plan.data
                for key, since in pending.items():
                    if held.pending_since.get(key) == since:
                        del held.pending_since[key]
                        metrics.ROUTE_PUBLISH_SECONDS.observe(done - since)
                for key, verdict in plan.verdicts.items():
                    if self._where.get(key) != shard:
                        continue  # moved or released meanwhile
                    if self._verdicts.get(key) != verdict:
                        self._verdicts[key] = verdict
                        changed.append(key)
        with self._lock:
            self._dirty |= failed
            self._count()
        if wrote:
            self._touch_pods()
            self._touch_again_at = time.monotonic() + TOUCH_AGAIN_SECONDS
        self._tell(changed)
        return not failed

    def _tell(self, changed: list[DistrictKey]) -> None:
        callback = self.on_verdicts
        if changed and callback is not None:
            size = 64  # a first publication of thousands: several status writers at once
            for start in range(0, len(changed), size):
                self._statuses.submit(callback, changed[start:start + size])

    def _count(self) -> None:
        metrics.ROUTES_PUBLISHED.set(sum(1 for v in self._verdicts.values() if v.routed))

    def _touch_pods(self, again: bool = False) -> None:
        """A pod update makes the kubelet sync that pod's volumes now, not on its next
        periodic sync (about a minute): the new routes reach the gateway within seconds."""
        assert self.gateway is not None
        gateway = self.gateway
        with self._lock:
            value = routing.revision({s: h.written for s, h in self._shards.items()
                                      if h.written is not None}) + ("-2" if again else "")
        podtouch.touch_pods(self.kube, gateway.namespace, names.gateway_selector(gateway.name),
                            names.ANNOTATION_ROUTES_REVISION, value)

