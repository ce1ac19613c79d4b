"""A Secret a District names, changed: reconciled at once, not at the next resync.

One `district-operator run` process serves the module (its own namespace) with a resync of
ten minutes, so only the watch on the named Secrets can bring a change within the test's
waits (each at most 30 s).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from district_operator import api, names

from tests.district_operator.conftest import (
    OperatorProcess,
    apply_yaml,
    district_manifest,
    make_namespace,
    settled,
    wait_for,
)

pytestmark = pytest.mark.cluster
NS = "operator-secret-refs"
KEYS = tuple(f"ssh-ed25519 {key} it{n}@lincoln.k12.example" for n, key in enumerate((
    "AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly",
    "AAAAC3NzaC1lZDI1NTE5AAAAIGnUVXq9CFy4H8HJ0MqTYGLkXzJz1DPMexgqv0UrnbsD")))


@pytest.fixture(scope="module")
def operator(crd: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    make_namespace(crd, NS)
    process = OperatorProcess(NS, tmp_path_factory.mktemp("operator") / "operator.log",
                              "--resync-seconds", "600")
    yield process
    process.stop()
    crd.kubectl("delete", "namespace", NS, "--wait=false")


def user_secret(crd: Any, name: str, **data: str) -> None:
    apply_yaml(crd, {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": name, "namespace": NS}, "stringData": data})


def served_keys(kube: api.Kube, district: str) -> str | None:
    body = kube.get("Secret", NS, names.authorized_keys_secret(district))
    data = (body or {}).get("data") or {}
    return base64.b64decode(data["authorized_keys"]).decode() if "authorized_keys" in data \
        else None


def reasons(kube: api.Kube, district: str) -> set[str]:
    body = settled(kube, NS, district) or {}
    return {c.get("reason", "") for c in (body.get("status") or {}).get("conditions") or []}


def test_a_named_keys_secret_changed_is_served_within_seconds(
        crd: Any, kube: api.Kube, operator: OperatorProcess) -> None:
    user_secret(crd, "lincoln-keys", authorized_keys=KEYS[0] + "\n")
    apply_yaml(crd, district_manifest("lincoln", NS, authorizedKeysSecretRef={
        "name": "lincoln-keys", "key": "authorized_keys"}))
    wait_for(lambda: served_keys(kube, "lincoln") == KEYS[0] + "\n", timeout=30,
             what="the named Secret's key served")

    user_secret(crd, "lincoln-keys", authorized_keys=f"{KEYS[0]}\n{KEYS[1]}\n")
    wait_for(lambda: served_keys(kube, "lincoln") == f"{KEYS[0]}\n{KEYS[1]}\n", timeout=30,
             what="the key added to the named Secret served")

    crd.kubectl("-n", NS, "delete", "secret", "lincoln-keys")
    wait_for(lambda: "KeysSecretNotFound" in reasons(kube, "lincoln"), timeout=30,
             what="the named Secret's deletion reported")
    assert secret_ref_reconciles(operator) >= 2


def test_a_named_database_secret_created_late_is_found_within_seconds(
        crd: Any, kube: api.Kube, operator: OperatorProcess) -> None:
    apply_yaml(crd, district_manifest("douglas", NS, authorizedKeys=[KEYS[0]], processing={
        "databaseSecretRef": {"name": "douglas-db"}}))
    wait_for(lambda: "DatabaseSecretNotFound" in reasons(kube, "douglas"), timeout=30,
             what="the missing database Secret reported")
    user_secret(crd, "douglas-db", uri="postgresql://douglas@db.example/douglas")
    wait_for(lambda: "DatabaseSecretNotFound" not in reasons(kube, "douglas"), timeout=30,
             what="the database Secret found once created")


def secret_ref_reconciles(operator: OperatorProcess) -> float:
    return sum(v for k, v in operator.metrics().items()
               if k.startswith("district_operator_reconciles_total{")
               and 'trigger="secret-ref"' in k)


def test_only_a_data_change_of_a_named_secret_reconciles(
        crd: Any, kube: api.Kube, operator: OperatorProcess) -> None:
    """Secrets no District names, and a named one whose metadata alone changed, reconcile
    nothing; then a data change of the named one (the marker: the watch delivers events in
    order, so the earlier ones have been seen once it is served) reconciles its District once."""
    user_secret(crd, "ellis-keys", authorized_keys=KEYS[0] + "\n")
    apply_yaml(crd, district_manifest("ellis", NS, authorizedKeysSecretRef={
        "name": "ellis-keys"}))
    wait_for(lambda: served_keys(kube, "ellis") == KEYS[0] + "\n", timeout=30,
             what="ellis's keys served")
    # The first event this process sees of a Secret it now knows as named counts as a change
    # (it has no digest of its data yet): one, then the measured part.
    first = secret_ref_reconciles(operator)
    crd.kubectl("-n", NS, "annotate", "--overwrite", "secret", "ellis-keys", "touched=first")
    wait_for(lambda: secret_ref_reconciles(operator) > first, timeout=30,
             what="the first event of the named Secret")
    time.sleep(1)
    before, before_ref = operator.total("district_operator_reconciles_total"), \
        secret_ref_reconciles(operator)
    for round_ in range(5):
        user_secret(crd, "unrelated", anything=str(round_))
        crd.kubectl("-n", NS, "annotate", "--overwrite", "secret", "ellis-keys",
                    f"touched={round_}")
    user_secret(crd, "ellis-keys", authorized_keys=f"{KEYS[0]}\n{KEYS[1]}\n")
    wait_for(lambda: served_keys(kube, "ellis") == f"{KEYS[0]}\n{KEYS[1]}\n", timeout=30,
             what="the marker change served")
    assert secret_ref_reconciles(operator) - before_ref == 1
    assert operator.total("district_operator_reconciles_total") - before == 1
