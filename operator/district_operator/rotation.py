"""Host key rotation, computed purely: the next step for a host-key Secret, given spec and clock.

The Secret holds the state (so that it survives the operator and needs no status): the current
keys under names.HOST_KEY_FILES, during a rotation the next keys under names.NEXT_HOST_KEY_FILES,
and three annotations: the spec.hostKeys.rotate value last acted on, since when the next keys
are announced, and when the last rotation completed. Steps:

- start: spec.hostKeys.rotate is above the value acted on and no rotation is in flight: new
  keys of every type are added as *next* (the server announces them, clients with
  UpdateHostKeys learn them);
- promote: the overlap (spec.hostKeys.overlap, read at every reconcile, so shortening it ends a
  rotation sooner) has passed since the next keys appeared: they replace the current keys,
  and the old ones are dropped.

A rotate raised again during a rotation starts another one after this one completes.

The shared gateway's host-key Secret (gatewaysecrets.py) goes through the same steps, driven by
the operator's --gateway-host-keys-rotate/-overlap as a HostKeysSpec instead of a District's.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from district_operator import keys, names
from district_operator.model import District, HostKeysSpec

# Whose rotation: a District (its spec.hostKeys) or the gateway's settings as a HostKeysSpec.
Rotated = District | HostKeysSpec


def spec_of(owner: Rotated) -> HostKeysSpec:
    return owner.host_keys if isinstance(owner, District) else owner


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class HostKeySecret:
    """What a host-key Secret holds, decoded: its files and the rotation's annotations."""

    files: Mapping[str, str]
    rotation: int = 0
    next_since: datetime | None = None
    rotated_at: datetime | None = None
    resource_version: str = ""

    @property
    def in_flight(self) -> bool:
        return any(self.files.get(f) for f in names.NEXT_HOST_KEY_FILES.values())

    def promote_at(self, owner: Rotated) -> datetime | None:
        if not self.in_flight or self.next_since is None:
            return None
        return self.next_since + timedelta(seconds=spec_of(owner).overlap_seconds)


def read_secret(secret: Mapping[str, Any]) -> HostKeySecret:
    """The host-key Secret's files (text) and rotation state; unreadable annotations count as
    absent (a rotation number that is not a number as 0)."""
    files = {k: base64.b64decode(v).decode("utf-8", errors="replace")
             for k, v in (secret.get("data") or {}).items()}
    meta = secret.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    rotation = str(annotations.get(names.ANNOTATION_HOST_KEYS_ROTATION) or "0")
    return HostKeySecret(
        files=files,
        rotation=int(rotation) if rotation.isdigit() else 0,
        next_since=_time(annotations.get(names.ANNOTATION_HOST_KEYS_NEXT_SINCE)),
        rotated_at=_time(annotations.get(names.ANNOTATION_HOST_KEYS_ROTATED_AT)),
        resource_version=str(meta.get("resourceVersion") or ""))


def initial_annotations(owner: Rotated) -> dict[str, str]:
    """A new host-key Secret's: the rotate value of its District counts as done (a District
    created with rotate: 3 gets fresh keys, not a rotation)."""
    return {names.ANNOTATION_HOST_KEYS_ROTATION: str(spec_of(owner).rotate)}


@dataclass(frozen=True)
class Step:
    """One rotation step: a merge patch for the Secret (None deletes) and what it means."""

    kind: Literal["start", "promote"]
    data: dict[str, str | None]
    annotations: dict[str, str | None]
    files: dict[str, str] = field(default_factory=dict)  # the Secret's files afterwards

    def patch(self, resource_version: str) -> dict[str, Any]:
        """The merge patch, made conditional on the version it was computed from: of two
        operators (a standby's resync) only one takes a step."""
        return {"metadata": {"resourceVersion": resource_version,
                             "annotations": self.annotations},
                "data": self.data}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def next_step(secret: HostKeySecret, owner: Rotated, now: datetime,
              generate: Callable[[], dict[str, str]] = keys.generate_host_keys) -> Step | None:
    """The step due now, or None when there is nothing to do."""
    files = dict(secret.files)
    spec = spec_of(owner)
    if secret.in_flight:
        promote_at = secret.promote_at(spec)
        if promote_at is None or now < promote_at:
            return None
        data: dict[str, str | None] = {}
        for key_type, current in names.HOST_KEY_FILES.items():
            upcoming = names.NEXT_HOST_KEY_FILES[key_type]
            for suffix in ("", ".pub"):
                if files.get(upcoming + suffix):
                    files[current + suffix] = files[upcoming + suffix]
                    data[current + suffix] = _b64(files[upcoming + suffix])
                files.pop(upcoming + suffix, None)
                data[upcoming + suffix] = None
        return Step("promote", data, {names.ANNOTATION_HOST_KEYS_NEXT_SINCE: None,
                                      names.ANNOTATION_HOST_KEYS_ROTATED_AT: _stamp(now)}, files)
    if spec.rotate <= secret.rotation:
        return None
    generated = generate()
    data = {}
    for key_type, current in names.HOST_KEY_FILES.items():
        upcoming = names.NEXT_HOST_KEY_FILES[key_type]
        for suffix in ("", ".pub"):
            files[upcoming + suffix] = generated[current + suffix]
            data[upcoming + suffix] = _b64(generated[current + suffix])
    return Step("start", data, {
        names.ANNOTATION_HOST_KEYS_ROTATION: str(spec.rotate),
        names.ANNOTATION_HOST_KEYS_NEXT_SINCE: _stamp(now)}, files)


@dataclass(frozen=True)
class RotationState:
    """What the status says of the host keys' rotation."""

    rotation: int
    in_flight: bool
    started_at: datetime | None = None
    promote_at: datetime | None = None
    completed_at: datetime | None = None
    queued: int | None = None  # a rotate value waiting for the rotation in flight

    def status(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"rotation": self.rotation}
        if self.in_flight:
            shown["startedAt"] = _stamp(self.started_at) if self.started_at else None
            shown["promoteAt"] = _stamp(self.promote_at) if self.promote_at else None
        elif self.completed_at is not None:
            shown["completedAt"] = _stamp(self.completed_at)
        return {k: v for k, v in shown.items() if v is not None}


def state(secret: HostKeySecret, owner: Rotated) -> RotationState:
    spec = spec_of(owner)
    queued = spec.rotate if secret.in_flight and spec.rotate > secret.rotation else None
    return RotationState(rotation=secret.rotation, in_flight=secret.in_flight,
                         started_at=secret.next_since, promote_at=secret.promote_at(spec),
                         completed_at=secret.rotated_at, queued=queued)
