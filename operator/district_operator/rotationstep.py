"""Taking a host-key rotation's due step on its Secret, once across operator replicas."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from district_operator import api, keys, rotation

log = logging.getLogger(__name__)


def take_due_step(kube: api.Kube, namespace: str, name: str, secret: dict[str, Any],
                  owner: rotation.Rotated, now: datetime, who: str,
                  generate: Callable[[], dict[str, str]] = keys.generate_host_keys
                  ) -> tuple[dict[str, Any], rotation.HostKeySecret]:
    """The Secret and what it holds after the step due now (if any) is taken.

    The step is one JSON merge patch carrying the resourceVersion it was computed from, so of
    two operators (a standby's resync) only one takes it; the other gets a 409 and reads the
    result instead. `who` names the owner in the log line ("district ns/name").
    """
    held = rotation.read_secret(secret)
    step = rotation.next_step(held, owner, now, generate)
    if step is None:
        return secret, held
    patch: Mapping[str, Any] = step.patch(held.resource_version)
    try:
        secret = kube.merge_patch("Secret", namespace, name, patch)
    except api.ApiError as exc:
        if exc.status != 409:
            raise
        secret = kube.get("Secret", namespace, name) or secret
    else:
        log.info("%s: host key rotation %s: %s", who, rotation.spec_of(owner).rotate, step.kind)
    return secret, rotation.read_secret(secret)
