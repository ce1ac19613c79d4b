"""Host key rotation, pure: the steps for a host-key Secret and what the status makes of them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from district_operator import builders, keys, names, rotation, status
from district_operator.model import InvalidDistrictError, parse_district

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEYS = keys.generate_host_keys()
NEW_KEYS = keys.generate_host_keys()


def district(**host_keys: Any):  # type: ignore[no-untyped-def]
    return parse_district({"metadata": {"name": "lincoln", "namespace": "d", "uid": "u",
                                        "generation": 1}, "spec": {"hostKeys": host_keys}})


def secret(files: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": "7", "annotations": annotations},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in files.items()}}


def apply(body: dict[str, Any], step: rotation.Step) -> dict[str, Any]:
    """The Secret after the step's merge patch, as the API server would leave it."""
    data = {k: v for k, v in body["data"].items() if step.data.get(k, v) is not None}
    data.update({k: v for k, v in step.data.items() if v is not None})
    annotations = {k: v for k, v in body["metadata"]["annotations"].items()
                   if step.annotations.get(k, v) is not None}
    annotations.update({k: v for k, v in step.annotations.items() if v is not None})
    return {"metadata": {"resourceVersion": "8", "annotations": annotations}, "data": data}


def test_a_new_secret_counts_the_districts_rotate_as_done() -> None:
    d = district(rotate=3)
    manifest = builders.host_keys_secret(d, KEYS, rotation.initial_annotations(d))
    held = rotation.read_secret(manifest)
    assert held.rotation == 3
    assert rotation.next_step(held, d, NOW) is None


def test_raising_rotate_adds_next_keys_then_promotes_them_after_the_overlap() -> None:
    body = secret(KEYS, **{names.ANNOTATION_HOST_KEYS_ROTATION: "0"})
    d = district(rotate=1, overlap="30d")
    step = rotation.next_step(rotation.read_secret(body), d, NOW, lambda: NEW_KEYS)
    assert step is not None and step.kind == "start"
    # Conditional on the version it was computed from: two operators never both step.
    assert step.patch("7")["metadata"]["resourceVersion"] == "7"
    body = apply(body, step)
    held = rotation.read_secret(body)
    assert held.in_flight and held.rotation == 1
    # The current keys are untouched; the new ones are next.
    for key_type, name in names.HOST_KEY_FILES.items():
        assert held.files[name] == KEYS[name]
        assert held.files[names.NEXT_HOST_KEY_FILES[key_type]] == NEW_KEYS[name]
    assert held.promote_at(d) == NOW + timedelta(days=30)
    # Nothing happens before the overlap ends, and raising rotate meanwhile queues.
    later = district(rotate=2, overlap="30d")
    assert rotation.next_step(held, later, NOW + timedelta(days=29, hours=23)) is None
    assert rotation.state(held, later).queued == 2

    promoted = rotation.next_step(held, d, NOW + timedelta(days=30), lambda: KEYS)
    assert promoted is not None and promoted.kind == "promote"
    body = apply(body, promoted)
    held = rotation.read_secret(body)
    assert not held.in_flight
    assert held.rotated_at == NOW + timedelta(days=30)
    assert {k: held.files[k] for k in names.HOST_KEY_FILES.values()} == \
        {k: NEW_KEYS[k] for k in names.HOST_KEY_FILES.values()}
    assert not any(k.startswith("next_") for k in body["data"])
    assert rotation.next_step(held, d, NOW + timedelta(days=31)) is None


def test_shortening_the_overlap_ends_a_rotation_sooner() -> None:
    body = secret({**KEYS, **{names.NEXT_HOST_KEY_FILES[t]: NEW_KEYS[f]
                              for t, f in names.HOST_KEY_FILES.items()}},
                  **{names.ANNOTATION_HOST_KEYS_ROTATION: "1",
                     names.ANNOTATION_HOST_KEYS_NEXT_SINCE: "2026-12-01T12:00:00Z"})
    held = rotation.read_secret(body)
    assert rotation.next_step(held, district(rotate=1), NOW + timedelta(hours=1)) is None
    step = rotation.next_step(held, district(rotate=1, overlap="1h"), NOW + timedelta(hours=1))
    assert step is not None and step.kind == "promote"


def test_the_status_lists_both_sets_during_a_rotation_and_the_condition_says_when() -> None:
    d = district(rotate=1, overlap="2h")
    files = {**KEYS, **{names.NEXT_HOST_KEY_FILES[t] + s: NEW_KEYS[f + s]
                        for t, f in names.HOST_KEY_FILES.items() for s in ("", ".pub")}}
    held = rotation.read_secret(secret(files, **{
        names.ANNOTATION_HOST_KEYS_ROTATION: "1",
        names.ANNOTATION_HOST_KEYS_NEXT_SINCE: "2026-12-01T12:00:00Z"}))
    observed = status.Observed(
        host_keys=keys.describe_host_keys(held.files),
        next_host_keys=keys.describe_host_keys(held.files, names.NEXT_HOST_KEY_FILES),
        rotation=rotation.state(held, d), service={"spec": {"type": "ClusterIP"}})
    st = status.compute_status(d, observed, {}, NOW)
    lines = st["knownHosts"].splitlines()
    assert len(lines) == 4
    for name in names.HOST_KEY_FILES.values():
        for files_ in (KEYS, NEW_KEYS):
            blob = files_[name + ".pub"].split()[1]
            assert sum(blob in line for line in lines) == 1
    assert [k["fingerprint"] for k in st["nextHostKeys"]] == \
        [k.fingerprint for k in keys.describe_host_keys(NEW_KEYS)]
    assert st["hostKeyRotation"] == {"rotation": 1, "startedAt": "2026-12-01T12:00:00Z",
                                     "promoteAt": "2026-12-01T14:00:00Z"}
    rotating = next(c for c in st["conditions"] if c["type"] == "HostKeysRotating")
    assert (rotating["status"], rotating["reason"]) == ("True", "NextKeysAnnounced")
    assert "2026-12-01T14:00:00Z" in rotating["message"]
    # Informational: a rotation starting or ending is never a Warning.
    changes = status.transitions([{**rotating, "status": "False", "reason": "NoRotation"}],
                                 st["conditions"])
    assert [c.warning for c in changes if c.type == "HostKeysRotating"] == [False]


def test_a_missing_secret_keeps_what_was_published_and_makes_ready_false() -> None:
    d = district()
    previous = {"hostKeys": [{"type": "ssh-ed25519", "fingerprint": "SHA256:old"}],
                "knownHosts": "host ssh-ed25519 AAAA\n", "observedGeneration": 1}
    st = status.compute_status(d, status.Observed(host_keys_missing=True,
                                                  service={"spec": {"type": "ClusterIP"}}),
                               previous, NOW)
    assert st["hostKeys"] == previous["hostKeys"] and st["knownHosts"] == previous["knownHosts"]
    by_type = {c["type"]: c for c in st["conditions"]}
    assert by_type["HostKeysReady"]["status"] == "False"
    assert by_type["HostKeysReady"]["reason"] == "HostKeysSecretMissing"
    assert "lincoln-host-keys" in by_type["HostKeysReady"]["message"]
    assert by_type["Ready"]["status"] == "False"
    change = next(c for c in status.transitions(
        [{**by_type["HostKeysReady"], "status": "True", "reason": "HostKeysPresent"}],
        st["conditions"]) if c.type == "HostKeysReady")
    assert change.warning


@pytest.mark.parametrize("overlap", ["30", "0s", "366d", "1w", "-1d", "1.5h"])
def test_an_overlap_the_crd_refuses_is_refused_by_the_model_too(overlap: str) -> None:
    with pytest.raises(InvalidDistrictError, match=r"spec\.hostKeys\.overlap"):
        district(overlap=overlap)


def test_the_gateway_rotates_by_its_settings_as_a_district_by_its_spec() -> None:
    """rotation.py driven by a HostKeysSpec (the operator's --gateway-host-keys-* flags)."""
    from district_operator.model import HostKeysSpec
    held = rotation.read_secret({"data": {k: base64.b64encode(v.encode()).decode()
                                          for k, v in KEYS.items()},
                                 "metadata": {"annotations": rotation.initial_annotations(
                                     HostKeysSpec(rotate=0))}})
    assert rotation.next_step(held, HostKeysSpec(rotate=0, overlap="1h"), NOW) is None
    start = rotation.next_step(held, HostKeysSpec(rotate=1, overlap="1h"), NOW)
    assert start is not None and start.kind == "start"
    started = rotation.read_secret({"data": {k: base64.b64encode(v.encode()).decode()
                                             for k, v in start.files.items()},
                                    "metadata": {"annotations": {
                                        k: v for k, v in start.annotations.items() if v}}})
    spec = HostKeysSpec(rotate=1, overlap="1h")
    assert rotation.state(started, spec).promote_at == NOW + timedelta(hours=1)
    assert rotation.next_step(started, spec, NOW + timedelta(minutes=59)) is None
    promote = rotation.next_step(started, spec, NOW + timedelta(hours=1))
    assert promote is not None and promote.kind == "promote"
