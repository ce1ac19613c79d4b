"""The kinds api.Kube addresses: the operator's own (its RBAC); dev cluster ones when given."""

from __future__ import annotations

import pytest
from district_devtools.localcluster import node
from district_operator import api
from kubernetes import client as k8s_client


def test_stand_in_kinds_are_not_the_operators() -> None:
    """api.KINDS is what the chart's Role must grant; the dev cluster's kinds are apart."""
    assert {"PersistentVolume", "ReplicaSet"} <= set(node.DEV_KINDS)
    assert not set(node.DEV_KINDS) & set(api.KINDS)
    with pytest.raises(ValueError, match="PersistentVolume"):
        api.path("PersistentVolume", None, "v")


def test_a_client_addresses_extra_kinds_only_when_given_them() -> None:
    kube = api.Kube(k8s_client.Configuration(), field_manager="district-operator")
    try:
        assert dict(kube.kinds) == api.KINDS
        provisioner = kube.acting_as("provisioner", extra_kinds=node.DEV_KINDS)
        assert provisioner.field_manager == "provisioner"
        assert dict(provisioner.kinds) == {**api.KINDS, **node.DEV_KINDS}
        assert api.path("PersistentVolume", None, "v", kinds=provisioner.kinds) == \
            "/api/v1/persistentvolumes/v"
        # The original client is unchanged; a plain acting_as keeps its kinds.
        assert "PersistentVolume" not in kube.kinds
        assert kube.acting_as("other").kinds is kube.kinds
        built = api.Kube(k8s_client.Configuration(), field_manager="x",
                         extra_kinds=node.DEV_KINDS)
        assert "PersistentVolume" in built.kinds
        built.close()
    finally:
        kube.close()
