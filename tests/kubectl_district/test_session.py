"""The plugin's API client: writes under its own field manager, outside the operator's metrics."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from district_operator import api, keys, metrics, names
from kubectl_district.session import FIELD_MANAGER, Session
from prometheus_client import REGISTRY

from tests.district_operator.conftest import district_manifest

pytestmark = pytest.mark.cluster


def operator_requests() -> float:
    """Every request the operator's metrics counted in this process so far."""
    return sum(sample.value for family in REGISTRY.collect()
               if family.name == "district_operator_api_requests"
               for sample in family.samples if sample.name.endswith("_total"))


def test_plugin_writes_as_kubectl_district_and_the_operator_does_not_count_them(
        unwatched: str, kube: api.Kube) -> None:
    public_key = keys.generate_host_keys()["ssh_host_ed25519_key.pub"].strip()
    kube.create(district_manifest("hoover", unwatched, authorizedKeys=[public_key]))
    session = Session.open(argparse.Namespace(namespace=unwatched, context=None,
                                              kubeconfig=None))
    try:
        before = operator_requests()
        body, _ = session.district("hoover")
        patched = session.kube.merge_patch(names.KIND, unwatched, "hoover", {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "spec": {"suspend": True}})
        assert operator_requests() == before
    finally:
        session.close()
    writers = {(f["manager"], f["operation"]) for f in patched["metadata"]["managedFields"]}
    assert (FIELD_MANAGER, "Update") in writers
    assert FIELD_MANAGER == "kubectl-district"
    # The operator's client, built as `district-operator run` builds it, counts its requests.
    operator_kube = api.Kube(field_manager=names.FIELD_MANAGER,
                             on_request=metrics.record_request)
    try:
        operator_kube.get(names.KIND, unwatched, "hoover")
    finally:
        operator_kube.close()
    assert operator_requests() == before + 1


def test_kube_acting_as_writes_under_the_other_field_manager(unwatched: str,
                                                              kube: api.Kube) -> None:
    stand_in = kube.acting_as("kubelet-stand-in")
    created: dict[str, Any] = stand_in.create({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "acting-as", "namespace": unwatched}, "stringData": {"a": "b"}})
    assert {f["manager"] for f in created["metadata"]["managedFields"]} == {"kubelet-stand-in"}
    assert kube.field_manager != "kubelet-stand-in"
