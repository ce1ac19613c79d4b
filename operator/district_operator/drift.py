"""Whether a live object still matches what we would apply: what keeps resyncs write-free."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from district_operator import names


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """A stable digest of a manifest (without its own hash annotation)."""
    stripped = copy.deepcopy(dict(manifest))
    annotations = stripped.get("metadata", {}).get("annotations", {})
    annotations.pop(names.ANNOTATION_APPLIED_HASH, None)
    encoded = json.dumps(stripped, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


def with_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest stamped with its hash, so a later resync can tell our last write apart."""
    stamped = copy.deepcopy(dict(manifest))
    digest = manifest_hash(stamped)
    stamped.setdefault("metadata", {}).setdefault("annotations", {})[
        names.ANNOTATION_APPLIED_HASH] = digest
    return stamped


def _empty(value: Any) -> bool:
    # The API server drops empty strings too (an env var's `value: ""` comes back without
    # `value`), so "" must count as absent or such an object is re-applied on every resync.
    return value is None or value == {} or value == [] or value == ""


def contains(desired: Any, live: Any) -> bool:
    """True when every field of `desired` has the same value in `live`.

    Fields the API server defaults or other controllers add are ignored; lists must have the same
    length and match item by item.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return _empty(desired) and live is None
        return all(
            (_empty(value) and _empty(live.get(key))) or contains(value, live.get(key))
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return _empty(desired) and _empty(live)
        return all(contains(d, lv) for d, lv in zip(desired, live, strict=True))
    return bool(desired == live)


def needs_apply(stamped: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Apply when the object is missing, our last write differs, or someone changed our fields."""
    if live is None:
        return True
    live_hash = (live.get("metadata", {}).get("annotations") or {}).get(
        names.ANNOTATION_APPLIED_HASH)
    wanted_hash = stamped["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH]
    if live_hash != wanted_hash:
        return True
    return not contains(stamped, live)
