"""Missed uploads: the webhook post when a District's UploadsOverdue episode starts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from district_operator import api, secretrefs, status
from district_operator.model import District
from district_operator.notifications import Notifier

log = logging.getLogger(__name__)

# The webhook's `event` for an overdue episode (the Event itself comes from the condition's
# transition, events.emit_transitions, with the condition's reason).
EVENT_UPLOADS_OVERDUE: Final = "UploadsOverdue"


def announce(kube: api.Kube, notifier: Notifier | None, district: District,
             previous: Mapping[str, Any], desired: Mapping[str, Any]) -> None:
    """Post the webhook once per episode: when the status just written turned UploadsOverdue
    True. Called after that status write, so a resync or a restarted operator, which finds the
    condition already True, never posts again; a crash between the write and this post loses
    the post (the condition, its Event and the chart's alert still tell)."""
    started = status.overdue_episode_started(previous, desired)
    if started is None or notifier is None or district.webhook_secret is None:
        return
    url = secretrefs.read(kube, district.namespace, district.webhook_secret).value
    if not url:
        log.warning("district %s/%s: uploads overdue, but webhook Secret %s has no %r",
                    district.namespace, district.name, district.webhook_secret.name,
                    district.webhook_secret.key)
        return
    last_epoch = desired.get("lastEpoch") or {}
    notifier.submit(url.strip(), {
        "district": district.name, "namespace": district.namespace,
        "event": EVENT_UPLOADS_OVERDUE, "reason": started.get("reason"),
        "message": started.get("message"),
        "expectEvery": status.duration_text(district.processing.expect_every_seconds or 0),
        **({"lastEpoch": last_epoch} if last_epoch else {})})
