"""The watch cache on the real control plane: what a reconcile leaves, and forget() clearing it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from district_operator import api, builders, keys, names
from district_operator.reconciler import Reconciler
from district_operator.watchcache import WatchCache

from tests.district_operator.conftest import TEST_IMAGE, district_manifest, make_namespace

pytestmark = pytest.mark.cluster
NS = "watchcache"


@pytest.fixture(scope="module")
def namespace(crd: Any) -> Iterator[str]:
    yield make_namespace(crd, NS)
    crd.kubectl("delete", "namespace", NS, "--wait=false")


@pytest.fixture
def cache() -> WatchCache:
    return WatchCache()


@pytest.fixture
def reconciler(kube: api.Kube, cache: WatchCache) -> Reconciler:
    return Reconciler(kube, builders.BuildInputs(image=TEST_IMAGE), cache)


def create_district(kube: api.Kube, name: str) -> dict[str, Any]:
    public_key = keys.generate_host_keys()["ssh_host_ed25519_key.pub"].strip()
    kube.create(district_manifest(name, NS, authorizedKeys=[public_key]))
    body = kube.get(names.KIND, NS, name)
    assert body is not None
    return body


def keys_secret(kube: api.Kube, name: str) -> dict[str, Any]:
    secret = kube.get("Secret", NS, names.authorized_keys_secret(name))
    assert secret is not None
    return secret


def test_forget_leaves_nothing_of_a_deleted_district(
        namespace: str, kube: api.Kube, cache: WatchCache, reconciler: Reconciler) -> None:
    body = create_district(kube, "forgotten")
    reconciler.reconcile(body)
    secret = keys_secret(kube, "forgotten")
    # The reconcile remembered its children's versions and the status it wrote.
    assert cache.is_known_version("Secret", secret)
    assert cache.districts_by_readiness() == {(NS, "False"): 1}
    kube.delete(names.KIND, NS, "forgotten")
    cache.forget(NS, "forgotten", body["metadata"]["uid"])
    assert not cache.is_known_version("Secret", secret)
    assert len(cache) == 0
    assert not cache.districts_by_readiness()


def test_a_district_deleted_during_its_reconcile_leaves_nothing(
        namespace: str, kube: api.Kube, cache: WatchCache, reconciler: Reconciler) -> None:
    body = create_district(kube, "vanishing")
    kube.delete(names.KIND, NS, "vanishing")
    reconciler.reconcile(body)  # applies the children, then finds the District gone
    assert len(cache) == 0


def test_forgetting_a_deleted_district_keeps_its_successor_of_the_same_name(
        namespace: str, kube: api.Kube, cache: WatchCache, reconciler: Reconciler) -> None:
    first = create_district(kube, "reborn")
    reconciler.reconcile(first)
    kube.delete(names.KIND, NS, "reborn")
    second = create_district(kube, "reborn")
    reconciler.reconcile(second)
    # The old District's DELETED event arrives after its successor was reconciled.
    cache.forget(NS, "reborn", first["metadata"]["uid"])
    assert len(cache) == 1
    assert cache.is_known_version("Secret", keys_secret(kube, "reborn"))
    cache.forget(NS, "reborn", second["metadata"]["uid"])
    assert len(cache) == 0


def test_which_districts_name_a_secret_follows_their_specs() -> None:
    """refer() records each District's named Secrets as of its newest reconciled generation;
    a spec that no longer names a Secret and forget() drop it; a reconcile of a District
    already forgotten, or of an older generation, records nothing (pure: no cluster used)."""
    from district_operator.model import parse_district

    key = keys.generate_host_keys()["ssh_host_ed25519_key.pub"].strip()

    def district(name: str, uid: str, generation: int = 1, **spec: Any) -> Any:
        body = district_manifest(name, NS, authorizedKeys=[key], **spec)
        body["metadata"].update(uid=uid, generation=generation)
        return parse_district(body)

    def refer(cache: WatchCache, d: Any) -> None:
        memory = cache.memory(d.key)
        with memory.lock:
            memory.adopt(d.uid)
            cache.refer(memory, d)

    cache = WatchCache()
    refer(cache, district("adams", "u1", authorizedKeysSecretRef={"name": "shared-keys"},
                          processing={"databaseSecretRef": {"name": "adams-db"}}))
    refer(cache, district("baker", "u2", authorizedKeysSecretRef={"name": "shared-keys"}))
    assert cache.referrers(NS, "shared-keys") == ["adams", "baker"]
    assert cache.referrers(NS, "adams-db") == ["adams"]
    assert cache.referrers("elsewhere", "shared-keys") == []
    refer(cache, district("baker", "u2", generation=2))  # no longer names the Secret
    assert cache.referrers(NS, "shared-keys") == ["adams"]
    # A resync's listing from before that change comes late: it changes nothing.
    refer(cache, district("baker", "u2", generation=1,
                          authorizedKeysSecretRef={"name": "shared-keys"}))
    assert cache.referrers(NS, "shared-keys") == ["adams"]
    memory = cache.memory((NS, "adams"))
    cache.forget(NS, "adams", "u1")
    assert cache.referrers(NS, "shared-keys") == [] and cache.referrers(NS, "adams-db") == []
    # A reconcile that began before the deletion finishes into its dropped memory.
    late = district("adams", "u1", authorizedKeysSecretRef={"name": "shared-keys"})
    with memory.lock:
        cache.refer(memory, late)
    assert cache.referrers(NS, "shared-keys") == []


def test_only_a_named_secrets_data_change_counts() -> None:
    from district_operator.model import parse_district

    key = keys.generate_host_keys()["ssh_host_ed25519_key.pub"].strip()
    body = district_manifest("cole", NS, authorizedKeys=[key],
                             authorizedKeysSecretRef={"name": "cole-keys"})
    body["metadata"].update(uid="u3", generation=1)
    cache = WatchCache()
    district = parse_district(body)
    memory = cache.memory(district.key)
    with memory.lock:
        memory.adopt("u3")
        cache.refer(memory, district)

    def secret(data: dict[str, str], **annotations: str) -> dict[str, Any]:
        return {"metadata": {"namespace": NS, "name": "cole-keys",
                             "annotations": annotations}, "data": data}

    assert cache.named_secret_changed("ADDED", secret({"authorized_keys": "QQ=="}))
    assert not cache.named_secret_changed("MODIFIED", secret({"authorized_keys": "QQ=="},
                                                             touched="by a controller"))
    assert cache.named_secret_changed("MODIFIED", secret({"authorized_keys": "Qg=="}))
    assert cache.named_secret_changed("DELETED", secret({"authorized_keys": "Qg=="}))
    assert cache.named_secret_changed("ADDED", secret({"authorized_keys": "Qg=="}))
