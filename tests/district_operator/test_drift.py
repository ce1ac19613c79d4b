"""The no-write test: what counts as drift and what does not."""

from __future__ import annotations

import copy

from district_operator import drift, names

DESIRED = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "s", "namespace": "n", "labels": {"a": "b"}},
           "spec": {"type": "ClusterIP", "ports": [{"port": 22, "targetPort": "ssh"}],
                    "selector": {"x": "y"}}}


def live_from(desired: dict) -> dict:  # type: ignore[type-arg]
    """What the API server returns: our fields plus defaults and fields of others."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="u", resourceVersion="7", annotations={
        **live["metadata"].get("annotations", {}), "other/tool": "x"})
    live["spec"]["clusterIP"] = "10.0.0.9"
    live["spec"]["ports"][0]["protocol"] = "TCP"
    live["status"] = {"loadBalancer": {}}
    return live


def test_unchanged_object_with_server_defaults_needs_no_write() -> None:
    stamped = drift.with_hash(DESIRED)
    assert not drift.needs_apply(stamped, live_from(stamped))


def test_missing_object_needs_a_write() -> None:
    assert drift.needs_apply(drift.with_hash(DESIRED), None)


def test_hand_edit_of_our_field_needs_a_write() -> None:
    stamped = drift.with_hash(DESIRED)
    live = live_from(stamped)
    live["spec"]["ports"][0]["targetPort"] = 2200
    assert drift.needs_apply(stamped, live)


def test_a_field_we_stopped_setting_changes_the_hash() -> None:
    before = drift.with_hash(DESIRED)
    after_desired = copy.deepcopy(DESIRED)
    del after_desired["spec"]["selector"]
    after = drift.with_hash(after_desired)
    # The live object still has the old field, so only the hash tells the difference.
    assert drift.needs_apply(after, live_from(before))
    assert after["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH] != \
        before["metadata"]["annotations"][names.ANNOTATION_APPLIED_HASH]


def test_list_length_matters_and_empty_equals_absent() -> None:
    assert not drift.contains({"a": [1, 2]}, {"a": [1, 2, 3]})
    assert drift.contains({"a": {}, "b": []}, {})
    assert drift.contains({"emptyDir": {}}, {"emptyDir": {}})


def test_an_empty_string_the_api_server_dropped_is_no_drift() -> None:
    # processing.formats: [] makes SFTPD_FORMATS "", which the API server stores without value.
    desired = {"env": [{"name": "SFTPD_FORMATS", "value": ""}]}
    assert drift.contains(desired, {"env": [{"name": "SFTPD_FORMATS"}]})
    assert not drift.contains({"env": [{"name": "A", "value": "x"}]}, {"env": [{"name": "A"}]})
