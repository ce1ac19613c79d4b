"""Events on a District for its conditions' transitions: the news `kubectl describe` shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from district_operator import api, status
from district_operator.conditions import ConditionType, Reason


def emit_transitions(kube: api.Kube, body: Mapping[str, Any], previous: Mapping[str, Any],
                     desired: Mapping[str, Any],
                     skip_reasons: frozenset[Reason] = frozenset()) -> None:
    """One Event per condition that changed between two statuses (see status.transitions)."""
    for change in status.transitions(previous.get("conditions") or [],
                                     desired.get("conditions") or []):
        if change.type == ConditionType.READY and change.status != "True":
            continue  # the failing part has its own Event
        if change.reason in skip_reasons:
            continue
        kube.event(body, "Warning" if change.warning else "Normal",
                   change.reason, f"{change.type}: {change.message}")
