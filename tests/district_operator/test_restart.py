"""SIGKILL the operator in the middle of reconciling 20 Districts, start it again: all converge,
no host key is regenerated, and nothing is duplicated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from district_operator import api, names

from tests.district_operator.conftest import (
    OperatorProcess,
    district_manifest,
    make_namespace,
    settled,
    wait_for,
)

pytestmark = pytest.mark.cluster
NS = "operator-restart"
COUNT = 20
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
       " it@lincoln.k12.example")
CHILD_KINDS = ("Secret", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy",
               "CronJob")


@pytest.fixture(scope="module")
def namespace(crd: Any) -> Iterator[str]:
    yield make_namespace(crd, NS)
    crd.kubectl("delete", "namespace", NS, "--wait=false")


def host_key_secrets(kube: api.Kube) -> dict[str, tuple[str, dict[str, str]]]:
    return {s["metadata"]["name"]: (s["metadata"]["uid"], s["data"])
            for s in kube.list("Secret", NS, f"{names.LABEL_COMPONENT}=host-keys")}


def test_sigkill_mid_reconcile_then_restart_converges(
        crd: Any, kube: api.Kube, namespace: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    items = [district_manifest(f"d{n:02d}", NS, authorizedKeys=[KEY]) for n in range(COUNT)]
    crd.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": items}))
    logs = tmp_path_factory.mktemp("restart")
    # Two workers so that the kill surely lands while work is left (host keys take a while).
    first = OperatorProcess(NS, logs / "first.log", "--workers", "2")
    try:
        wait_for(lambda: len(host_key_secrets(kube)) >= 4, timeout=60, interval=0.05,
                 what="the first host keys")
    finally:
        first.kill()
    before = host_key_secrets(kube)
    reconciled_before = sum(1 for n in range(COUNT) if settled(kube, NS, f"d{n:02d}"))
    assert reconciled_before < COUNT, "the kill came too late to interrupt anything"

    second = OperatorProcess(NS, logs / "second.log")
    try:
        wait_for(lambda: all(settled(kube, NS, f"d{n:02d}") for n in range(COUNT)),
                 timeout=120, what="all 20 Districts to converge after the restart")
        assert second.total("district_operator_reconcile_errors_total") == 0
    finally:
        second.stop()

    after = host_key_secrets(kube)
    assert len(after) == COUNT
    for name, (uid, data) in before.items():
        assert after[name] == (uid, data), f"{name} was regenerated"
    for n in range(COUNT):
        district = f"d{n:02d}"
        body = kube.get(names.KIND, NS, district)
        assert body is not None
        fingerprints = {k["type"] for k in body["status"]["hostKeys"]}
        assert fingerprints == {"ssh-ed25519", "ssh-rsa"}
        selector = f"{names.LABEL_DISTRICT}={district}"
        counts = {kind: len(kube.list(kind, NS, selector)) for kind in CHILD_KINDS}
        assert counts == {"Secret": 2, "PersistentVolumeClaim": 1, "Deployment": 1,
                          "Service": 1, "NetworkPolicy": 1, "CronJob": 2}, district
    # One ReplicaSet per server: the pod template never flapped between two operators' writes.
    replica_sets = [r["metadata"]["name"] for r in kube.list("ReplicaSet", NS)]
    assert len(replica_sets) == COUNT
