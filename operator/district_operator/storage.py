"""kopf's per-object bookkeeping kept in memory, so kopf itself writes nothing to a District."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, cast

import kopf

from district_operator import names

# Our reconcile is level-based and idempotent, so losing this memory on restart only means every
# District is reconciled once more at start-up (kopf sees it as new), which we want anyway.


def _uid(body: kopf.Body) -> str:
    return str(body.get("metadata", {}).get("uid", ""))


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """Last-handled essence per object uid, instead of kopf's annotation on the District."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
              ) -> kopf.BodyEssence:
        """What a change of means: a District's spec, labels and annotations.

        kopf calls this on every watch event of every watched kind and, by default, deep-copies
        the whole object (managedFields included) to then throw most of it away; children have no
        change handlers here, so for them nothing is copied at all.
        """
        if body.get("kind") != names.KIND:
            return kopf.BodyEssence()
        metadata = body.get("metadata", {})
        essence: dict[str, Any] = {"spec": copy.deepcopy(dict(body.get("spec") or {}))}
        labels = dict(metadata.get("labels") or {})
        annotations = {k: v for k, v in (metadata.get("annotations") or {}).items()
                       if not k.startswith("kopf.zalando.org/")
                       and k != "kubectl.kubernetes.io/last-applied-configuration"}
        if labels or annotations:
            essence["metadata"] = {k: v for k, v in (("labels", labels),
                                                     ("annotations", annotations)) if v}
        return cast(kopf.BodyEssence, essence)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(_uid(body))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._essences[_uid(body)] = essence

    def forget(self, uid: str) -> None:
        self._essences.pop(uid, None)


class MemoryProgressStorage(kopf.ProgressStorage):
    """Handler progress (retries, backoff) per object uid, instead of annotations."""

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[tuple[str, str], Any] = {}

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        record: kopf.ProgressRecord | None = self._records.get((_uid(body), str(key)))
        return record

    def store(self, *, key: kopf.HandlerId, record: kopf.ProgressRecord, body: kopf.Body,
              patch: kopf.Patch) -> None:
        self._records[(_uid(body), str(key))] = record

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.pop((_uid(body), str(key)), None)

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        # kopf touches an object to wake itself for a delayed retry; our periodic resync
        # retries instead, so nothing is written here.
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence

    def forget(self, uid: str) -> None:
        for record_key in [k for k in self._records if k[0] == uid]:
            del self._records[record_key]
