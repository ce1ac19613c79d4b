"""What the operator remembers of each District between watch events, forgotten with it."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from district_operator import names
from district_operator.conditions import ConditionType
from district_operator.model import District
from district_operator.status import Observed

DistrictKey = tuple[str, str]  # (namespace, name)
SecretKey = tuple[str, str]  # (namespace, name)


@dataclass
class DistrictMemory:
    """Everything kept for one District; read and written only under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uid: str = ""
    # The status we last wrote: we are its only writer, and a watch event or a GET may still
    # show an older one.
    status: dict[str, Any] | None = None
    # The District as last reconciled and what that reconcile observed, so that a child's watch
    # event is checked against that one child without reading everything again.
    district: District | None = None
    observed: Observed | None = None
    # (kind, name) -> the resourceVersion of a child we wrote or read last: watch events
    # carrying it are echoes of our own work.
    seen_versions: dict[tuple[str, str], str] = field(default_factory=dict)
    # Secret name -> the manifest we applied (a Secret's content comes from other objects).
    applied_secrets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def adopt(self, uid: str) -> None:
        """Start afresh when this name now belongs to another District (deleted, recreated)."""
        if uid != self.uid:
            self.uid = uid
            self.status = None
            self.district = None
            self.observed = None
            self.seen_versions.clear()
            self.applied_secrets.clear()

    def remember(self, child: Mapping[str, Any] | None) -> None:
        if child:
            meta = child.get("metadata", {})
            self.seen_versions[(str(child.get("kind")), meta.get("name", ""))] = \
                meta.get("resourceVersion", "")


def ready_state(district_status: Mapping[str, Any] | None) -> str:
    """The Ready condition's status ("True", "False", "Unknown") in a District status."""
    for condition in (district_status or {}).get("conditions") or []:
        if condition.get("type") == ConditionType.READY:
            return str(condition.get("status", "Unknown"))
    return "Unknown"


class WatchCache:
    """The per-District memory of one operator process, safe to use from many threads."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[DistrictKey, DistrictMemory] = {}
        # (namespace, Secret name) -> the Districts naming it; the reverse, with the uid and
        # generation it was recorded from; and a digest of each named Secret's data as last
        # seen, so an event that changed only its metadata reconciles nothing.
        self._referrers: dict[SecretKey, set[str]] = {}
        self._referenced: dict[DistrictKey, tuple[str, int, frozenset[str]]] = {}
        self._secret_digests: dict[SecretKey, str] = {}

    def memory(self, key: DistrictKey) -> DistrictMemory:
        """The District's memory, new when there is none (lock it before use)."""
        with self._guard:
            return self._entries.setdefault(key, DistrictMemory())

    def all(self) -> list[tuple[DistrictKey, DistrictMemory]]:
        """Every District's memory, as of now (lock each before use)."""
        with self._guard:
            return list(self._entries.items())

    def existing(self, key: DistrictKey) -> DistrictMemory | None:
        """The District's memory when it has one: a watch event alone never creates one."""
        return self._entries.get(key)

    def forget(self, namespace: str, name: str, uid: str) -> None:
        """Drop everything kept for a deleted District (a newer one of the same name stays).

        A reconcile still running holds the dropped memory and finishes into it: nothing of it
        comes back here.
        """
        with self._guard:
            memory = self._entries.get((namespace, name))
            if memory is not None and memory.uid in (uid, ""):
                del self._entries[(namespace, name)]
                self._set_references((namespace, name), "", 0, frozenset())

    def refer(self, memory: DistrictMemory, district: District) -> None:
        """Record the Secrets the District names, from its reconcile (memory's lock held): not
        once memory is forgotten (the District deleted meanwhile), and not from a body older
        than the one recorded (a resync's listing can be minutes old)."""
        with self._guard:
            if self._entries.get(district.key) is not memory:
                return
            uid, generation, _ = self._referenced.get(district.key, ("", 0, frozenset()))
            if uid == district.uid and generation > district.generation:
                return
            self._set_references(district.key, district.uid, district.generation,
                                 district.referenced_secrets)

    def _set_references(self, key: DistrictKey, uid: str, generation: int,
                        secrets: frozenset[str]) -> None:
        namespace, name = key
        _, _, before = self._referenced.pop(key, ("", 0, frozenset()))
        for secret in before - secrets:
            named_by = self._referrers[(namespace, secret)]
            named_by.discard(name)
            if not named_by:
                del self._referrers[(namespace, secret)]
                self._secret_digests.pop((namespace, secret), None)
        for secret in secrets - before:
            self._referrers.setdefault((namespace, secret), set()).add(name)
        if uid:  # kept even when it names none: a late, older body must not add some back
            self._referenced[key] = (uid, generation, secrets)

    def referrers(self, namespace: str, secret: str) -> list[str]:
        """The Districts of namespace that name this Secret, by name (runs in kopf's event loop
        for every Secret event: one short lock)."""
        with self._guard:
            return sorted(self._referrers.get((namespace, secret), ()))

    def named_secret_changed(self, event_type: str, body: Mapping[str, Any]) -> bool:
        """For an event on a Secret some District names: whether its data changed since the
        last event seen (a deletion always counts; the first event after a start too)."""
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        digest = hashlib.sha256(json.dumps(body.get("data") or {}, sort_keys=True).encode()
                                ).hexdigest()
        with self._guard:
            if event_type == "DELETED":
                self._secret_digests.pop(key, None)
                return True
            if self._secret_digests.get(key) == digest:
                return False
            if key in self._referrers:
                self._secret_digests[key] = digest
            return True

    def is_known_version(self, kind: str, body: Mapping[str, Any]) -> bool:
        """True when a child's watch event carries a version this operator already saw.

        Runs in kopf's event loop for every child event: dictionary reads only, no lock.
        """
        meta = body.get("metadata", {})
        owner = (meta.get("labels") or {}).get(names.LABEL_DISTRICT, "")
        memory = self._entries.get((meta.get("namespace", ""), owner))
        return memory is not None and \
            memory.seen_versions.get((kind, meta.get("name", ""))) == meta.get("resourceVersion")

    def districts_by_readiness(self) -> Counter[tuple[str, str]]:
        """(namespace, Ready status) -> how many Districts with a status this process keeps."""
        with self._guard:
            memories = list(self._entries.items())
        return Counter((namespace, ready_state(memory.status))
                       for (namespace, _), memory in memories if memory.status is not None)

    def __len__(self) -> int:
        return len(self._entries)
