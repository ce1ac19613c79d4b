"""Changing one field of a District's spec: a conditional patch, retried on conflict, with a
warning when a GitOps tool applies that field."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from district_operator import api, names
from district_operator.model import District

from kubectl_district.errors import PluginError
from kubectl_district.session import FIELD_MANAGER, Session

CONFLICT_RETRIES = 5
Outcome = TypeVar("Outcome")


def gitops_managers(body: Mapping[str, Any], field: str) -> list[str]:
    """Who applies spec.<field> declaratively: a direct edit would be undone by them."""
    found = []
    for entry in body.get("metadata", {}).get("managedFields") or []:
        owned = ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        if entry.get("operation") == "Apply" and f"f:{field}" in owned and \
                entry.get("manager") != FIELD_MANAGER:
            found.append(str(entry.get("manager")))
    annotations = body.get("metadata", {}).get("annotations") or {}
    if field in annotations.get("kubectl.kubernetes.io/last-applied-configuration", ""):
        found.append("kubectl apply")
    return found


def patch_spec_field(session: Session, name: str, field: str,
                     change: Callable[[Mapping[str, Any], District], tuple[Any, Outcome]]
                     ) -> Outcome:
    """Set spec.<field> to what change(body, district) asks for (None: leave it as it is) and
    return change's outcome, reading the District again when someone else changed it meanwhile.
    """
    for _ in range(CONFLICT_RETRIES):
        body, district = session.district(name)
        value, outcome = change(body, district)
        if value is None:
            return outcome
        managers = gitops_managers(body, field)
        if managers:
            print(f"warning: spec.{field} is applied by {', '.join(managers)}: the next apply "
                  "will undo this change; change the source instead (--print-patch)",
                  file=sys.stderr)
        try:
            # resourceVersion makes the patch conditional: no change made elsewhere is lost.
            session.kube.merge_patch(names.KIND, session.namespace, name, {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "spec": {field: value}})
        except api.ApiError as exc:
            if exc.status == 409:
                continue
            raise PluginError(f"the API server refused the change: {exc.message}") from None
        return outcome
    raise PluginError(f"District {name!r} kept changing while it was being updated; try again")
