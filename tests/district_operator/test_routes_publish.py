"""The operator publishes the gateway's routing shards, against the real control plane: the
entries of shared-mode Districts in two namespaces, a key change within seconds, a login
clash marked on both and cleared, dedicated Districts left out, a restart that rewrites
nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from district_contract import routes
from district_operator import api, names

from tests.district_operator.conftest import (
    OperatorProcess,
    apply_yaml,
    condition,
    district_manifest,
    make_namespace,
    wait_for,
)

pytestmark = pytest.mark.cluster
NORTH, SOUTH, GATEWAY_NS = "routes-north", "routes-south", "routes-gateway"
GATEWAY = "gw"
KEY_A = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
         " it@north.example")
KEY_B = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFwHbCR0y6DtNvRFD6Ma9aB3tNe1FyWjTZTC7Yw+p1nb"
         " it@south.example")


def operator_args() -> tuple[str, ...]:
    return ("--namespace", SOUTH, "--gateway-namespace", GATEWAY_NS, "--gateway-name", GATEWAY,
            "--gateway-proxy-from", "10.0.0.0/8")


@pytest.fixture(scope="module")
def kube(kube: api.Kube) -> api.Kube:
    """The tests' client, addressing the gateway's ConfigMaps too."""
    return kube.acting_as(kube.field_manager, extra_kinds=api.GATEWAY_KINDS)


@pytest.fixture(scope="module")
def setup(crd: Any, kube: api.Kube, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Any]]:
    for ns in (NORTH, SOUTH, GATEWAY_NS):
        make_namespace(crd, ns)
    # A gateway pod as the chart's Deployment would label it (no node runs it here: only
    # its annotation is looked at).
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "gw-0", "namespace": GATEWAY_NS, "labels": names.gateway_selector(GATEWAY)},
        "spec": {"containers": [{"name": "gateway", "image": "registry.invalid/gw:test"}]}})
    logs = tmp_path_factory.mktemp("routes")
    operator = OperatorProcess(NORTH, logs / "operator.log", *operator_args())
    state = {"operator": operator, "logs": logs}
    try:
        yield state
    finally:
        state["operator"].stop()
        for ns in (NORTH, SOUTH, GATEWAY_NS):
            crd.kubectl("delete", "namespace", ns, "--wait=false")


def shared(name: str, namespace: str, login: str, *keys: str, **spec: Any) -> dict[str, Any]:
    return district_manifest(name, namespace, login=login, authorizedKeys=list(keys),
                             service={"mode": "shared", "type": "ClusterIP"}, **spec)


def shard_entries(kube: api.Kube, login: str) -> list[routes.RouteEntry]:
    shard = routes.shard_of(login)
    body = kube.get("ConfigMap", GATEWAY_NS, names.gateway_routes_configmap(GATEWAY, shard))
    if body is None:
        return []
    return routes.decode(body["data"][routes.shard_file(shard)].encode())


def entry_of(kube: api.Kube, login: str, namespace: str) -> routes.RouteEntry | None:
    return next((e for e in shard_entries(kube, login)
                 if e.login == login and e.namespace == namespace), None)


def routed(kube: api.Kube, namespace: str, name: str) -> dict[str, Any] | None:
    body = kube.get(names.KIND, namespace, name)
    if not body or not (body.get("status") or {}).get("conditions"):
        return None
    try:
        return condition(body, "Routed")
    except StopIteration:
        return None


def routed_reason(kube: api.Kube, namespace: str, name: str) -> str | None:
    found = routed(kube, namespace, name)
    return None if found is None else str(found["reason"])


def test_two_namespaces_published_in_their_shards(setup: dict[str, Any], crd: Any,
                                                  kube: api.Kube) -> None:
    apply_yaml(crd, shared("applegrove", NORTH, "applegrove.org", KEY_A))
    apply_yaml(crd, shared("birchfield", SOUTH, "birchfield.org", KEY_B,
                           allowedSourceRanges=["203.0.113.0/24"]))
    apply_yaml(crd, district_manifest("cedar", NORTH, login="cedar.org", authorizedKeys=[KEY_A]))
    a = wait_for(lambda: entry_of(kube, "applegrove.org", NORTH), timeout=60,
                 what="applegrove's routing entry")
    b = wait_for(lambda: entry_of(kube, "birchfield.org", SOUTH), timeout=60,
                 what="birchfield's routing entry")
    service = kube.get("Service", NORTH, names.service("applegrove"))
    assert service is not None
    assert a.backend == f"{service['spec']['clusterIP']}:22"
    assert a.authorized_keys == (KEY_A,)
    assert a.name == "applegrove" and not a.suspended
    host_keys = kube.get("Secret", NORTH, names.host_keys_secret("applegrove"))
    assert host_keys is not None and len(a.host_keys) == 2
    assert {line.split()[0] for line in a.host_keys} == {"ssh-ed25519", "ssh-rsa"}
    assert b.allowed_sources == ("203.0.113.0/24",) and b.authorized_keys == (KEY_B,)
    # Routed on both, Published; the dedicated one is Dedicated and in no shard.
    wait_for(lambda: routed_reason(kube, NORTH, "applegrove") == "Published", timeout=30,
             what="applegrove Routed=Published")
    wait_for(lambda: routed_reason(kube, SOUTH, "birchfield") == "Published", timeout=30,
             what="birchfield Routed=Published")
    assert (routed(kube, NORTH, "applegrove") or {}).get("status") == "True"
    wait_for(lambda: routed_reason(kube, NORTH, "cedar") == "Dedicated", timeout=30,
             what="cedar Routed=Dedicated")
    assert entry_of(kube, "cedar.org", NORTH) is None
    # The gateway pod was told.
    pod = kube.get("Pod", GATEWAY_NS, "gw-0")
    assert pod is not None
    assert names.ANNOTATION_ROUTES_REVISION in (pod["metadata"].get("annotations") or {})
    labels = kube.get("ConfigMap", GATEWAY_NS, names.gateway_routes_configmap(
        GATEWAY, routes.shard_of("applegrove.org")))
    assert labels is not None
    assert labels["metadata"]["labels"][names.LABEL_COMPONENT] == names.COMPONENT_ROUTES


def test_a_key_added_reaches_the_shard_within_seconds(setup: dict[str, Any], crd: Any,
                                                      kube: api.Kube) -> None:
    wait_for(lambda: entry_of(kube, "applegrove.org", NORTH), timeout=60,
             what="applegrove's routing entry")
    pod = kube.get("Pod", GATEWAY_NS, "gw-0")
    assert pod is not None
    revision = (pod["metadata"].get("annotations") or {}).get(names.ANNOTATION_ROUTES_REVISION)
    started = time.monotonic()
    kube.merge_patch(names.KIND, NORTH, "applegrove",
                     {"spec": {"authorizedKeys": [KEY_A, KEY_B]}})
    wait_for(lambda: (entry_of(kube, "applegrove.org", NORTH) or routes.RouteEntry(
        "", "", "", "")).authorized_keys == (KEY_A, KEY_B), timeout=30, interval=0.02,
             what="the new key in applegrove's shard")
    took = time.monotonic() - started
    print(f"key added -> shard written: {took:.3f} s")
    # Generous under a loaded machine; typically a few tenths of a second (debounce 0.1 s).
    assert took < 5, f"{took:.1f} s from the District's change to its shard"
    # The pods are patched right after the shard's write returns.
    wait_for(lambda: ((kube.get("Pod", GATEWAY_NS, "gw-0") or {}).get("metadata", {}).get(
        "annotations") or {}).get(names.ANNOTATION_ROUTES_REVISION) != revision, timeout=10,
             interval=0.02, what="the gateway pod touched after the write")
    # And once more when the writes have been quiet for a moment (the kubelet learns of the
    # ConfigMap and the pod through two watches; a sync that came first is redone).
    wait_for(lambda: ((kube.get("Pod", GATEWAY_NS, "gw-0") or {}).get("metadata", {}).get(
        "annotations") or {}).get(names.ANNOTATION_ROUTES_REVISION, "").endswith("-2"),
             timeout=20, what="the gateway pod touched a second time")


def events_of(kube: api.Kube, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("Event", namespace)
            if e.get("reason") == reason and e["involvedObject"].get("name") == name]


def test_a_login_clash_marks_both_and_clears(setup: dict[str, Any], crd: Any,
                                             kube: api.Kube) -> None:
    wait_for(lambda: routed_reason(kube, NORTH, "applegrove") == "Published", timeout=60,
             what="applegrove Routed=Published")
    apply_yaml(crd, shared("impostor", SOUTH, "applegrove.org", KEY_B))
    wait_for(lambda: routed_reason(kube, NORTH, "applegrove") == "LoginClash", timeout=30,
             what="applegrove Routed=LoginClash")
    wait_for(lambda: routed_reason(kube, SOUTH, "impostor") == "LoginClash", timeout=30,
             what="impostor Routed=LoginClash")
    for namespace, name, other in ((NORTH, "applegrove", f"{SOUTH}/impostor"),
                                   (SOUTH, "impostor", f"{NORTH}/applegrove")):
        found = routed(kube, namespace, name)
        assert found is not None and found["status"] == "False"
        assert other in found["message"]
        body = kube.get(names.KIND, namespace, name)
        assert body is not None
        assert condition(body, "Ready")["reason"] in ("NotRouted", "StorageNotReady",
                                                      "ServerNotReady")
        assert "Routed" in condition(body, "Ready")["message"]
        events = wait_for(lambda ns=namespace, n=name: events_of(kube, ns, n, "LoginClash"),
                          timeout=30, what=f"a LoginClash Event on {name}")
        assert events[0]["type"] == "Warning" and other in events[0]["message"]
    # Both published, so the gateway itself refuses the login (login_clash).
    both = [e for e in shard_entries(kube, "applegrove.org") if e.login == "applegrove.org"]
    assert {(e.namespace, e.name) for e in both} == {(NORTH, "applegrove"), (SOUTH, "impostor")}
    # Fixed: the impostor takes its own login; both are published again.
    kube.merge_patch(names.KIND, SOUTH, "impostor", {"spec": {"login": "impostor.org"}})
    wait_for(lambda: routed_reason(kube, NORTH, "applegrove") == "Published", timeout=30,
             what="applegrove Published again")
    wait_for(lambda: routed_reason(kube, SOUTH, "impostor") == "Published", timeout=30,
             what="impostor Published")
    assert [e.namespace for e in shard_entries(kube, "applegrove.org")
            if e.login == "applegrove.org"] == [NORTH]
    assert entry_of(kube, "impostor.org", SOUTH) is not None
    wait_for(lambda: events_of(kube, NORTH, "applegrove", "Published"), timeout=30,
             what="a Published Event when the clash ended")


def test_dedicated_and_deleted_leave_the_table(setup: dict[str, Any], crd: Any,
                                               kube: api.Kube) -> None:
    apply_yaml(crd, shared("dogwood", NORTH, "dogwood.org", KEY_A))
    apply_yaml(crd, shared("elm", SOUTH, "elm.org", KEY_B))
    wait_for(lambda: entry_of(kube, "dogwood.org", NORTH), timeout=60, what="dogwood published")
    wait_for(lambda: entry_of(kube, "elm.org", SOUTH), timeout=60, what="elm published")
    kube.merge_patch(names.KIND, NORTH, "dogwood", {"spec": {"service": {"mode": "dedicated"}}})
    kube.delete(names.KIND, SOUTH, "elm")
    wait_for(lambda: entry_of(kube, "dogwood.org", NORTH) is None, timeout=30,
             what="dogwood out of its shard")
    wait_for(lambda: entry_of(kube, "elm.org", SOUTH) is None, timeout=30,
             what="elm out of its shard")
    wait_for(lambda: routed_reason(kube, NORTH, "dogwood") == "Dedicated", timeout=30,
             what="dogwood Routed=Dedicated")


def test_a_shard_deleted_or_edited_by_hand_is_written_again(setup: dict[str, Any],
                                                             kube: api.Kube) -> None:
    wait_for(lambda: entry_of(kube, "birchfield.org", SOUTH), timeout=60,
             what="birchfield's routing entry")
    shard = routes.shard_of("birchfield.org")
    name = names.gateway_routes_configmap(GATEWAY, shard)
    kube.delete("ConfigMap", GATEWAY_NS, name)
    # Read back every resync interval (3 s in these tests).
    wait_for(lambda: entry_of(kube, "birchfield.org", SOUTH), timeout=30,
             what="the deleted shard written again")
    kube.merge_patch("ConfigMap", GATEWAY_NS, name,
                     {"data": {routes.shard_file(shard): "not routing data"}})
    wait_for(lambda: entry_of(kube, "birchfield.org", SOUTH) if (kube.get(
        "ConfigMap", GATEWAY_NS, name) or {}).get("data", {}).get(
        routes.shard_file(shard), "").startswith("{") else None, timeout=30,
             what="the edited shard written again")


def configmaps(kube: api.Kube) -> dict[str, tuple[str, str]]:
    return {c["metadata"]["name"]: (c["metadata"]["resourceVersion"], json.dumps(c["data"]))
            for c in kube.list("ConfigMap", GATEWAY_NS, f"{names.LABEL_COMPONENT}=routes")}


def test_a_restart_republishes_the_same_bytes_and_writes_nothing(
        setup: dict[str, Any], crd: Any, kube: api.Kube) -> None:
    wait_for(lambda: entry_of(kube, "applegrove.org", NORTH), timeout=60,
             what="applegrove's routing entry")
    operator: OperatorProcess = setup["operator"]
    # Settle: nothing pending (the previous tests' changes all written).
    time.sleep(1)
    operator.stop()
    before = configmaps(kube)
    assert before
    shared_ones = [(NORTH, "applegrove"), (SOUTH, "birchfield")] + \
        [(SOUTH, "impostor")] * (kube.get(names.KIND, SOUTH, "impostor") is not None)
    conditions_before = {(ns, n): routed(kube, ns, n) for ns, n in shared_ones}
    assert all(c and c["reason"] == "Published" for c in conditions_before.values())
    second = OperatorProcess(NORTH, setup["logs"] / "second.log", *operator_args())
    setup["operator"] = second
    # Every District reconciled by the new process, and one resync round past that.
    wait_for(lambda: second.total("district_operator_reconciles_total") >= 5, timeout=60,
             what="the new operator's reconciles")
    time.sleep(4)
    assert second.total("district_operator_route_shard_writes_total") == 0
    assert configmaps(kube) == before
    # Not even for a moment Publishing: the same Routed, transition time and all.
    assert {key: routed(kube, *key) for key in conditions_before} == conditions_before
    # And it still publishes: a change after the restart is written.
    kube.merge_patch(names.KIND, NORTH, "applegrove", {"spec": {"authorizedKeys": [KEY_A]}})
    wait_for(lambda: (entry_of(kube, "applegrove.org", NORTH) or routes.RouteEntry(
        "", "", "", "")).authorized_keys == (KEY_A,), timeout=30,
             what="a change after the restart")
    assert second.total("district_operator_route_shard_writes_total") >= 1
