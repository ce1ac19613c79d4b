"""Status computed purely: conditions, transitions, endpoint, job results."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from district_operator import keys, status
from district_operator.model import parse_district

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
GOOD_KEY = keys.KeyCheck(accepted=(keys.AuthorizedKey("ssh-ed25519", "ssh-ed25519 AAAA", "fp"),),
                         rejected=())


def district(**spec: Any):  # type: ignore[no-untyped-def]
    return parse_district({"metadata": {"name": "lincoln", "namespace": "d", "uid": "u",
                                        "generation": 2}, "spec": spec})


def healthy() -> status.Observed:
    return status.Observed(
        key_check=GOOD_KEY,
        pvc={"spec": {"resources": {"requests": {"storage": "10Gi"}}},
             "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}},
        deployment={"status": {"availableReplicas": 1}},
        service={"spec": {"type": "LoadBalancer"},
                 "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}},
        host_keys=keys.describe_host_keys(keys.generate_host_keys()))


def conditions(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}


def test_healthy_district_is_ready_with_endpoint_and_known_hosts() -> None:
    observed = healthy()
    st = status.compute_status(district(backups={"databaseSecretRef": {"name": "db"}}),
                               observed, {}, NOW)
    assert st["observedGeneration"] == 2
    assert conditions(st)["Ready"] == ("True", "Ready")
    assert conditions(st)["ProcessingHealthy"] == ("Unknown", "NoRunYet")
    assert st["endpoint"] == {"host": "198.51.100.7", "port": 22, "user": "lincoln",
                              "mode": "dedicated"}
    assert st["knownHosts"].splitlines()[0] == "198.51.100.7 " + observed.host_keys[0].public_line
    assert [k["type"] for k in st["hostKeys"]] == ["ssh-ed25519", "ssh-rsa"]
    assert all(c["observedGeneration"] == 2 and c["lastTransitionTime"] == "2026-11-28T02:00:00Z"
               for c in st["conditions"])


def test_recomputing_an_unchanged_status_gives_an_empty_patch() -> None:
    d = district(processing={"formats": []})
    first = status.compute_status(d, healthy_without_keys_change := healthy(), {}, NOW)
    second = status.compute_status(d, healthy_without_keys_change, first, LATER)
    assert status.status_patch(first, second) == {}


def test_transition_time_moves_only_when_status_changes() -> None:
    d = district(processing={"formats": []})
    observed = healthy()
    first = status.compute_status(d, observed, {}, NOW)
    observed.deployment = {"status": {"availableReplicas": 0}}
    second = status.compute_status(d, observed, first, LATER)
    by_type = {c["type"]: c for c in second["conditions"]}
    assert by_type["ServerReady"]["lastTransitionTime"] == "2026-11-28T02:05:00Z"
    assert by_type["StorageReady"]["lastTransitionTime"] == "2026-11-28T02:00:00Z"
    assert conditions(second)["Ready"] == ("False", "ServerNotReady")
    changes = status.transitions(first["conditions"], second["conditions"])
    assert [(c.type, c.reason, c.warning) for c in changes] == [
        ("Ready", "ServerNotReady", True), ("ServerReady", "Unavailable", True)]


def test_bad_key_is_reported_but_good_keys_keep_the_district_ready() -> None:
    observed = healthy()
    observed.key_check = keys.KeyCheck(accepted=GOOD_KEY.accepted, rejected=(
        keys.RejectedKey("spec.authorizedKeys[1]", "the key data is damaged"),))
    st = status.compute_status(district(processing={"formats": []}), observed, {}, NOW)
    assert conditions(st)["KeysValid"] == ("False", "InvalidKeys")
    assert "spec.authorizedKeys[1]: the key data is damaged" in next(
        c["message"] for c in st["conditions"] if c["type"] == "KeysValid")
    assert conditions(st)["Ready"] == ("True", "Ready")


def test_database_problems_make_jobs_unhealthy_and_district_not_ready() -> None:
    observed = healthy()
    observed.processing_database = status.SecretProblem("DatabaseSecretKeyMissing",
                                                        "Secret db has no key 'uri'")
    st = status.compute_status(district(), observed, {}, NOW)
    assert conditions(st)["ProcessingHealthy"] == ("False", "DatabaseSecretKeyMissing")
    assert conditions(st)["Ready"][0] == "False"


def test_suspended_and_pending_volume() -> None:
    observed = healthy()
    observed.pvc = {"status": {"phase": "Pending"}}
    st = status.compute_status(district(suspend=True), observed, {}, NOW)
    assert conditions(st)["ServerReady"] == ("False", "Suspended")
    assert conditions(st)["StorageReady"] == ("False", "Pending")
    assert conditions(st)["Ready"] == ("False", "Suspended")


def test_cluster_ip_endpoint_is_the_service_dns_name_and_pending_lb_has_none() -> None:
    d = district(service={"type": "ClusterIP", "port": 2022})
    assert status.endpoint(d, {"spec": {"type": "ClusterIP"}}) == {
        "host": "lincoln-sftp.d.svc", "port": 2022}
    assert status.endpoint(district(), {"spec": {"type": "LoadBalancer"}, "status": {}}) is None


EPOCHS_RESULT = {"kind": "epochs", "outcome": "NeedsAttention", "message": "1 processed",
                 "processed": [
                     {"name": "2026-11-27T0200Z", "outcome": "Succeeded", "format": "oneroster",
                      "processedAt": "2026-11-27T02:10:00Z", "rows": 5, "errors": 0},
                     {"name": "2026-11-28T0200Z", "outcome": "Succeeded", "format": "oneroster",
                      "processedAt": "2026-11-28T02:10:00Z", "rows": 9, "errors": 0}],
                 "unrecognized": ["dump-from-old-sis"], "pending": []}


def test_epochs_result_fills_last_epoch_and_uploads_needing_attention() -> None:
    report = status.parse_termination_message("epochs", json.dumps(EPOCHS_RESULT), True, "")
    st = status.apply_job_report({"conditions": []}, report, "lincoln-epochs-1", 2, NOW)
    assert st["lastEpoch"] == {"name": "2026-11-28T0200Z", "outcome": "Succeeded",
                               "format": "oneroster", "processedAt": "2026-11-28T02:10:00Z"}
    assert st["uploadsNeedingAttention"] == ["dump-from-old-sis"]
    assert conditions(st)["UploadsNeedAttention"] == ("True", "UnrecognizedUploads")
    assert conditions(st)["ProcessingHealthy"] == ("True", "NeedsAttention")
    older = dict(EPOCHS_RESULT, processed=[EPOCHS_RESULT["processed"][0]])  # type: ignore[index]
    again = status.apply_job_report(st, status.parse_termination_message(
        "epochs", json.dumps(older), True, ""), "lincoln-epochs-0", 2, LATER)
    assert again["lastEpoch"]["name"] == "2026-11-28T0200Z"  # never goes back in time


def test_backup_result_and_failure_without_a_result() -> None:
    result = {"kind": "backup", "outcome": "Succeeded", "file": "lincoln-20261128T020000Z.dump",
              "bytes": 1048576, "sha256": "ab" * 32, "completedAt": "2026-11-28T02:01:00Z",
              "kept": 3, "pruned": [], "message": "ok"}
    st = status.apply_job_report({}, status.parse_termination_message(
        "backup", json.dumps(result), True, ""), "lincoln-backup-1", 2, NOW)
    assert st["lastBackup"] == {"file": "lincoln-20261128T020000Z.dump", "bytes": 1048576,
                                "sha256": "ab" * 32, "completedAt": "2026-11-28T02:01:00Z"}
    assert conditions(st)["BackupsHealthy"] == ("True", "BackupSucceeded")
    crashed = status.parse_termination_message("backup", "Traceback...\nOSError: disk full",
                                               False, "exit 1")
    assert crashed.outcome == "Failed" and crashed.message == "OSError: disk full"
    failed = status.apply_job_report(st, crashed, "lincoln-backup-2", 2, LATER)
    assert conditions(failed)["BackupsHealthy"] == ("False", "BackupFailed")
    assert failed["lastBackup"] == st["lastBackup"]
    # The job's verdict survives the next reconcile.
    recomputed = status.compute_status(
        district(backups={"databaseSecretRef": {"name": "db"}}), healthy(), failed, LATER)
    assert conditions(recomputed)["BackupsHealthy"] == ("False", "BackupFailed")


def _pod(*containers: dict[str, object]) -> dict[str, object]:
    return {"status": {"containerStatuses": list(containers)}}


def test_last_termination_prefers_the_newest_pod_with_a_message() -> None:
    from district_operator.status import last_termination

    old = _pod({"name": "job", "state": {"terminated": {
        "exitCode": 0, "reason": "Completed", "message": '{"outcome":"Succeeded"}'}}})
    new = _pod({"name": "job", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}})
    running = _pod({"name": "job", "state": {"running": {}}})
    assert last_termination([old, new, running]) == (
        '{"outcome":"Succeeded"}', "container job ended Completed with exit code 0")
    assert last_termination([new, running]) == (
        None, "container job ended Error with exit code 1")
    assert last_termination([running]) == (None, None)
    assert last_termination([]) == (None, None)


# ---- missed uploads (spec.processing.expectEvery) ------------------------------------------

def overdue_district(**spec: Any):  # type: ignore[no-untyped-def]
    return parse_district({"metadata": {"name": "lincoln", "namespace": "d", "uid": "u",
                                        "generation": 2,
                                        "creationTimestamp": "2026-11-27T00:00:00Z"},
                           "spec": {"processing": {"expectEvery": "26h"}, **spec}})


def overdue(st: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == "UploadsOverdue")


def test_overdue_counts_from_creation_then_from_the_last_epoch() -> None:
    d = overdue_district()
    created = datetime(2026, 11, 27, tzinfo=UTC)
    # 25h59m after creation: on schedule; 26h: overdue, never uploaded.
    st = status.compute_status(d, healthy(), {}, created + timedelta(hours=26) - timedelta(
        minutes=1))
    assert conditions(st)["UploadsOverdue"] == ("False", "OnSchedule")
    assert "the next by 2026-11-28T02:00:00Z" in overdue(st)["message"]
    st = status.compute_status(d, healthy(), st, created + timedelta(hours=26))
    assert conditions(st)["UploadsOverdue"] == ("True", "NeverUploaded")
    assert overdue(st)["message"] == (
        "no upload has been processed since the District was created at 2026-11-27T00:00:00Z "
        "(expected every 26h): overdue since 2026-11-28T02:00:00Z")
    # Ready is about logging in, not about the district's exports.
    assert conditions(st)["Ready"] == ("True", "Ready")
    # A processed epoch moves the clock: 26h from its processedAt.
    st["lastEpoch"] = {"name": "2026-11-28T0100Z", "processedAt": "2026-11-28T01:10:00Z"}
    st = status.compute_status(d, healthy(), st, created + timedelta(hours=27))
    assert conditions(st)["UploadsOverdue"] == ("False", "OnSchedule")
    st = status.compute_status(d, healthy(), st, datetime(2026, 11, 29, 3, 10, tzinfo=UTC))
    assert conditions(st)["UploadsOverdue"] == ("True", "Overdue")
    assert "no upload processed since 2026-11-28T01:10:00Z (epoch 2026-11-28T0100Z" in \
        overdue(st)["message"]


def test_an_overdue_status_is_stable_across_resyncs() -> None:
    d, seen = overdue_district(), healthy()
    first = status.compute_status(d, seen, {}, datetime(2026, 11, 29, tzinfo=UTC))
    later = status.compute_status(d, seen, first, datetime(2026, 12, 5, tzinfo=UTC))
    assert status.status_patch(first, later) == {}  # no write while the episode goes on
    assert status.overdue_episode_started(first, later) is None
    assert status.overdue_episode_started({}, first) is not None


def test_no_expectation_or_suspended_is_never_overdue() -> None:
    far = datetime(2030, 1, 1, tzinfo=UTC)
    plain = parse_district({"metadata": {"name": "l", "namespace": "d", "generation": 1,
                                         "creationTimestamp": "2026-11-27T00:00:00Z"}})
    assert conditions(status.compute_status(plain, healthy(), {}, far))["UploadsOverdue"] == \
        ("False", "NotExpected")
    suspended = overdue_district(suspend=True)
    assert conditions(status.compute_status(suspended, healthy(), {}, far))[
        "UploadsOverdue"] == ("False", "Suspended")


def test_a_job_result_with_a_new_epoch_clears_overdue_at_once() -> None:
    d = overdue_district()
    now = datetime(2026, 11, 30, tzinfo=UTC)
    before = status.compute_status(d, healthy(), {}, now)
    assert conditions(before)["UploadsOverdue"] == ("True", "NeverUploaded")
    result = {"kind": "epochs", "outcome": "Succeeded", "message": "1 processed",
              "processed": [{"name": "e1", "outcome": "Succeeded", "format": "oneroster",
                             "processedAt": "2026-11-29T23:50:00Z"}],
              "unrecognized": [], "pending": []}
    report = status.parse_termination_message("epochs", json.dumps(result), True, "")
    after = status.refresh_uploads_overdue(
        status.apply_job_report(before, report, "lincoln-epochs-1", 2, now), d, now)
    assert conditions(after)["UploadsOverdue"] == ("False", "OnSchedule")
    assert [c["type"] for c in after["conditions"]] == [c["type"] for c in before["conditions"]]
    changes = status.transitions(before["conditions"], after["conditions"])
    cleared = next(c for c in changes if c.type == "UploadsOverdue")
    assert not cleared.warning


def test_expect_every_is_parsed_and_bounded() -> None:
    assert overdue_district().processing.expect_every_seconds == 26 * 3600
    assert status.duration_text(26 * 3600) == "26h"
    assert status.duration_text(5400 + 7) == "1h30m7s"
    for bad in ("59m", "745h", "2d", "", "26", 26):
        try:
            overdue_district(processing={"expectEvery": bad})
        except ValueError as exc:
            assert "expectEvery" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_shared_mode_shows_the_gateway_endpoint_host_keys_and_login() -> None:
    gateway_keys = keys.describe_host_keys(keys.generate_host_keys())
    next_keys = keys.describe_host_keys(keys.generate_host_keys())
    observed = healthy()
    observed.gateway = status.GatewaySeen(
        installed=True, endpoint={"host": "sftp.example.org", "port": 22},
        host_keys=gateway_keys, next_host_keys=next_keys)
    st = status.compute_status(district(login="lincoln.k12.example", service={"mode": "shared"}),
                               observed, {}, NOW)
    assert st["endpoint"] == {"host": "sftp.example.org", "port": 22,
                              "user": "lincoln.k12.example", "mode": "shared"}
    assert [k["fingerprint"] for k in st["hostKeys"]] == [k.fingerprint for k in gateway_keys]
    assert [k["fingerprint"] for k in st["nextHostKeys"]] == [k.fingerprint for k in next_keys]
    assert st["knownHosts"] == keys.known_hosts("sftp.example.org", 22, gateway_keys + next_keys)
    # The District's own keys (the gateway's leg to its server) are not what clients see.
    assert not any(k.public_line in st["knownHosts"] for k in observed.host_keys)


def test_shared_mode_before_the_gateway_has_an_address_publishes_no_endpoint() -> None:
    observed = healthy()
    observed.gateway = status.GatewaySeen(installed=True, endpoint=None,
                                          host_keys=keys.describe_host_keys(
                                              keys.generate_host_keys()))
    st = status.compute_status(district(service={"mode": "shared"}), observed, {}, NOW)
    assert "endpoint" not in st and "knownHosts" not in st
    assert st["hostKeys"]  # the fingerprints are known before the address
    # No gateway installed at all: nothing to show, and nothing breaks.
    observed.gateway = status.GatewaySeen()
    st = status.compute_status(district(service={"mode": "shared"}), observed, {}, NOW)
    assert "endpoint" not in st and "hostKeys" not in st
    assert st["conditions"]


def test_gateway_endpoint_is_its_load_balancer_address_and_ssh_port() -> None:
    service = {"spec": {"ports": [{"name": "metrics", "port": 9090},
                                  {"name": "ssh", "port": 22}]},
               "status": {"loadBalancer": {"ingress": [{"hostname": "gw.example.org"}]}}}
    assert status.gateway_endpoint(service) == {"host": "gw.example.org", "port": 22}
    assert status.gateway_endpoint({"spec": service["spec"], "status": {}}) is None
    assert status.gateway_endpoint(None) is None
