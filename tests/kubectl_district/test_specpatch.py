"""Who the plugin warns about before it changes a spec field that GitOps applies."""

from __future__ import annotations

import json
from typing import Any

from kubectl_district.session import FIELD_MANAGER
from kubectl_district.specpatch import gitops_managers


def _applied(manager: str, *fields: str, operation: str = "Apply") -> dict[str, Any]:
    return {"manager": manager, "operation": operation,
            "fieldsV1": {"f:spec": {f"f:{f}": {} for f in fields}}}


def test_an_apply_owning_the_field_is_named_and_the_plugin_itself_is_not() -> None:
    body = {"metadata": {"managedFields": [
        _applied("argocd-controller", "hostKeys", "login"),
        _applied(FIELD_MANAGER, "hostKeys"),
        _applied("kubectl-edit", "hostKeys", operation="Update"),
        _applied("flux", "authorizedKeys")]}}
    assert gitops_managers(body, "hostKeys") == ["argocd-controller"]
    assert gitops_managers(body, "authorizedKeys") == ["flux"]
    assert gitops_managers(body, "integration") == []


def test_a_client_side_kubectl_apply_of_the_field_is_named() -> None:
    last = json.dumps({"spec": {"login": "lincoln", "hostKeys": {"rotate": 1}}})
    body = {"metadata": {"annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": last}}}
    assert gitops_managers(body, "hostKeys") == ["kubectl apply"]
    assert gitops_managers(body, "authorizedKeys") == []
