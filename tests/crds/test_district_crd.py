"""The District CRD on a real API server: installs, examples, defaults, columns, refusals."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "district.yaml"
MINIMAL_EXAMPLE = REPO / "examples" / "district.yaml"
FULL_EXAMPLE = REPO / "examples" / "district-full.yaml"
NAMESPACE = "test-district-crd"

ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINzdmVxOZfojVuZlP43haO0MLMrCWjfq6GUob3Hg22Ly"
           " it@lincoln.k12.example")
ECDSA = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNgmqQ+ILVIQS"
         "/6ZjZm+p+gr6D6kXXtde+M3x2YPbL7BEUlHe9qIdDhGGLrKo4f5Cw9WwHRlj2vcTmBtvnpn7Hs= sis@lincoln")
ED25519_BLOB = ED25519.split()[1]


def merged(target: Any, patch: Any) -> Any:
    """`target` with a JSON merge patch (RFC 7386) applied: None deletes, dicts merge."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


def district(name: str, patch: dict[str, Any] | None = None) -> dict[str, Any]:
    """A valid District with one key, changed by a merge patch."""
    base = {"apiVersion": "districtsftp.io/v1alpha1", "kind": "District",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"authorizedKeys": [ED25519]}}
    return merged(base, patch or {})  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def api(cluster: Any) -> Iterator[Any]:
    """The cluster with the District CRD installed and this module's namespace."""
    ok(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    ok(cluster, "wait", "--for=condition=Established", "--timeout=60s",
                    "crd/districts.districtsftp.io")
    ok(cluster, "create", "namespace", NAMESPACE)
    yield cluster
    ok(cluster, "delete", "namespace", NAMESPACE, "--wait=false")


def ok(api: Any, *args: str, input: str | None = None) -> Any:
    """Run kubectl and fail with its error output when it fails."""
    result = api.kubectl(*args, input=input, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result


def object_name(prefix: str, request: pytest.FixtureRequest) -> str:
    """A District name from the test case's id, short enough to be the login as well."""
    return f"{prefix}-{request.node.callspec.id}"[:32].rstrip("-")


def create(api: Any, obj: dict[str, Any], *flags: str) -> Any:
    return api.kubectl("create", "--validate=strict", *flags, "-f", "-",
                       input=json.dumps(obj), check=False)


def get(api: Any, name: str) -> dict[str, Any]:
    out = ok(api, "get", "district", name, "-n", NAMESPACE, "-o", "json").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def table(output: str) -> list[list[str]]:
    """The cells of `kubectl get` output; columns are separated by at least two spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]


def test_the_crd_is_established_with_its_names(api: Any) -> None:
    crd = json.loads(ok(api, "get", "crd", "districts.districtsftp.io", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["dist"]
    assert crd["status"]["acceptedNames"]["categories"] == ["districtsftp"]
    resources = ok(api, "api-resources", "--api-group=districtsftp.io", "-o", "wide").stdout
    assert re.search(r"^districts\s+dist\s+districtsftp.io/v1alpha1\s+true\s+District\s", resources,
                     re.MULTILINE), resources


def test_the_minimal_example_applies_and_the_defaults_are_stored(api: Any) -> None:
    ok(api, "apply", "--validate=strict", "-n", NAMESPACE, "-f", str(MINIMAL_EXAMPLE))
    assert get(api, "lincoln")["spec"] == {
        "authorizedKeys": [ED25519],
        "storage": {"size": "10Gi", "accessMode": "ReadWriteOnce"},
        "service": {"type": "LoadBalancer", "port": 22},
        "processing": {"schedule": "*/10 * * * *", "settleSeconds": 300,
                       "formats": ["oneroster", "generic-csv"]},
        "retention": {"processedDays": 30, "schedule": "17 3 * * *"},
        "backups": {"schedule": "0 2 * * *", "keep": 14},
        "integration": {"mode": "push"},
        "hostKeys": {"rotate": 0, "overlap": "30d"},
        "suspend": False,
        "deletionPolicy": "Retain",
    }


def test_the_full_example_applies_with_every_field_kept(api: Any) -> None:
    ok(api, "apply", "--validate=strict", "-n", NAMESPACE, "-f", str(FULL_EXAMPLE))
    (written,) = [doc for doc in yaml.safe_load_all(FULL_EXAMPLE.read_text())
                  if doc["kind"] == "District"]
    # Equal, not a superset: a field the schema did not know would have been pruned.
    assert get(api, written["metadata"]["name"])["spec"] == written["spec"]


def test_kubectl_get_shows_the_printer_columns(api: Any) -> None:
    ok(api, "apply", "-n", NAMESPACE, "-f", str(MINIMAL_EXAMPLE))
    now = datetime.now(UTC).replace(microsecond=0)
    status = {"status": {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                        "message": "ready", "lastTransitionTime": now.isoformat()}],
        "endpoint": {"host": "198.51.100.7", "port": 22},
        "lastEpoch": {"name": "2026-11-28T0200Z", "outcome": "Succeeded",
                      "processedAt": (now - timedelta(minutes=20)).isoformat()},
        "lastBackup": {"file": "lincoln-20261128T020000Z.dump", "bytes": 1048576,
                       "completedAt": (now - timedelta(hours=30)).isoformat()},
    }}
    ok(api, "patch", "district", "lincoln", "-n", NAMESPACE, "--subresource=status",
                "--type=merge", "-p", json.dumps(status))

    rows = table(ok(api, "get", "districts", "-n", NAMESPACE).stdout)
    assert rows[0] == ["NAME", "READY", "ENDPOINT", "LAST UPLOAD", "LAST BACKUP", "AGE"]
    lincoln = next(row for row in rows if row[0] == "lincoln")
    assert lincoln[1:5] == ["True", "198.51.100.7", "20m", "30h"]

    wide = table(ok(api, "get", "dist", "lincoln", "-n", NAMESPACE, "-o", "wide").stdout)
    assert wide[0] == ["NAME", "READY", "ENDPOINT", "LAST UPLOAD", "LAST BACKUP", "AGE",
                       "LOGIN", "PORT", "SUSPENDED"]
    assert wide[1][-2:] == ["22", "false"]

    by_category = ok(api, "get", "districtsftp", "-n", NAMESPACE, "-o", "name").stdout
    assert "district.districtsftp.io/lincoln" in by_category.split()


def test_status_is_written_only_through_the_status_subresource(api: Any) -> None:
    ok(api, "create", "-f", "-", input=json.dumps(district("status-only")))
    ok(api, "patch", "district", "status-only", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"status": {"knownHosts": "forged"}}))
    assert "status" not in get(api, "status-only")

    bad_condition = {"status": {"conditions": [
        {"type": "Ready", "status": "Maybe", "reason": "Guessing", "message": "",
         "lastTransitionTime": "2026-11-28T02:00:00Z"}]}}
    result = api.kubectl("patch", "district", "status-only", "-n", NAMESPACE,
                         "--subresource=status", "--type=merge", "-p", json.dumps(bad_condition),
                         check=False)
    assert result.returncode != 0
    assert 'status.conditions[0].status: Unsupported value: "Maybe"' in result.stderr


# Each case: a merge patch that makes the valid District above invalid, the field the API server
# names, and (part of) the message a person reads.
INVALID = [
    pytest.param({"spec": {"login": "Lincoln"}}, "spec.login",
                 'login "Lincoln" is not a valid user name: use lowercase letters',
                 id="login-uppercase"),
    pytest.param({"spec": {"login": ".applegrove.org"}}, "spec.login",
                 "starting with a letter or digit", id="login-leading-dot"),
    pytest.param({"spec": {"login": "-applegrove.org"}}, "spec.login",
                 'login "-applegrove.org" is not a valid user name', id="login-leading-hyphen"),
    pytest.param({"spec": {"login": "applegrove..org"}}, "spec.login",
                 'login "applegrove..org" is not a valid user name', id="login-double-dot"),
    pytest.param({"spec": {"login": "applegrove.org."}}, "spec.login",
                 "not ending with . and without ..", id="login-trailing-dot"),
    pytest.param({"spec": {"login": "apple grove.org"}}, "spec.login",
                 'login "apple grove.org" is not a valid user name', id="login-with-space"),
    pytest.param({"spec": {"login": "applegrove.org/.."}}, "spec.login",
                 'login "applegrove.org/.." is not a valid user name', id="login-with-slash"),
    pytest.param({"spec": {"login": "l" * 254}}, "spec.login",
                 "may not be more than 253", id="login-too-long"),
    pytest.param({"metadata": {"name": "lincoln-county-unified-school-district-number-1"},
                  "spec": {"login": "lincoln"}}, "metadata.name",
                 "a District's name becomes part of the names of its Service and CronJobs, so it "
                 "must be at most 42 characters", id="name-too-long-for-child-objects"),
    pytest.param({"metadata": {"name": "lincoln.k12"}}, "metadata.name",
                 "lowercase letters, digits and '-', start with a letter",
                 id="name-with-dot"),
    pytest.param({"spec": {"authorizedKeys": [f"ssh-dss {ED25519_BLOB} old@lincoln"]}},
                 "spec.authorizedKeys[0]",
                 'authorized key type "ssh-dss" is not supported: an entry must start with '
                 "ssh-ed25519 (recommended)", id="key-type-dsa"),
    pytest.param({"spec": {"authorizedKeys": [f'from="10.0.0.0/8" {ED25519}']}},
                 "spec.authorizedKeys[0]",
                 'authorized_keys options such as from="..." or command="..." are not accepted',
                 id="key-with-options"),
    pytest.param({"spec": {"authorizedKeys": [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n"]}},
        "spec.authorizedKeys[0]",
        "this is a private key: put the public key here (the .pub file), and treat this private "
        "key as exposed",
        id="private-key-pasted"),
    pytest.param({"spec": {"authorizedKeys": [ED25519, "ssh-ed25519 "]}},
                 "spec.authorizedKeys[1]", "the key data is missing or damaged",
                 id="key-without-data"),
    pytest.param({"spec": {"authorizedKeys": ["ssh-ed25519 not-base64!"]}},
                 "spec.authorizedKeys[0]", "the key data is missing or damaged",
                 id="key-data-not-base64"),
    pytest.param({"spec": {"authorizedKeys": [f"{ED25519}\n{ECDSA}"]}},
                 "spec.authorizedKeys[0]", "or the entry holds more than one line",
                 id="two-keys-in-one-entry"),
    pytest.param({"spec": {"authorizedKeys": []}}, "spec.authorizedKeys",
                 "no one could log in: give at least one public key", id="no-keys"),
    pytest.param({"spec": {"authorizedKeys": None,
                           "authorizedKeysSecretRef": {"name": "Lincoln_Keys"}}},
                 "spec.authorizedKeysSecretRef.name",
                 '"Lincoln_Keys" is not a valid Secret name', id="secret-ref-bad-name"),
    pytest.param({"spec": {"processing": {"databaseSecretRef": {"key": "uri"}}}},
                 "spec.processing.databaseSecretRef.name", "Required value",
                 id="secret-ref-without-name"),
    pytest.param({"spec": {"notifications": {"webhookSecretRef": {"name": "hook",
                                                                  "key": "url/full"}}}},
                 "spec.notifications.webhookSecretRef.key",
                 '"url/full" is not a valid Secret key', id="secret-ref-bad-key"),
    pytest.param({"spec": {"allowedSourceRanges": ["203.0.113.0/33"]}},
                 "spec.allowedSourceRanges[0]",
                 'allowedSourceRanges entry "203.0.113.0/33" is not a network in CIDR notation',
                 id="cidr-prefix-too-long"),
    pytest.param({"spec": {"allowedSourceRanges": ["10.0.0.0/8", "203.0.113.7"]}},
                 "spec.allowedSourceRanges[1]", "or 203.0.113.7/32 for a single address",
                 id="cidr-without-prefix"),
    pytest.param({"spec": {"allowedSourceRanges": ["lincoln.k12.example/32"]}},
                 "spec.allowedSourceRanges[0]", "is not a network in CIDR notation",
                 id="cidr-host-name"),
    pytest.param({"spec": {"allowedSourceRanges": ["203.0.113.7/24"]}},
                 "spec.allowedSourceRanges[0]",
                 "has address bits set beyond its prefix length: did you mean 203.0.113.0/24?",
                 id="cidr-host-bits-set"),
    pytest.param({"spec": {"processing": {"schedule": "*/10 * * *"}}},
                 "spec.processing.schedule",
                 'schedule "*/10 * * *" is not a cron schedule: write five fields',
                 id="cron-four-fields"),
    pytest.param({"spec": {"backups": {"schedule": "0 0 2 * * *"}}}, "spec.backups.schedule",
                 "is not a cron schedule", id="cron-with-seconds"),
    pytest.param({"spec": {"retention": {"schedule": "every night"}}}, "spec.retention.schedule",
                 'schedule "every night" is not a cron schedule', id="cron-words"),
    pytest.param({"spec": {"backups": {"schedule": "@every 1h"}}}, "spec.backups.schedule",
                 "or one of @hourly, @daily", id="cron-every-macro"),
    pytest.param({"spec": {"retention": {"schedule": "60 3 * * *"}}}, "spec.retention.schedule",
                 'schedule "60 3 * * *" has a field out of range: minute 0-59',
                 id="cron-minute-60"),
    pytest.param({"spec": {"backups": {"schedule": "0 24 * * *"}}}, "spec.backups.schedule",
                 "has a field out of range", id="cron-hour-24"),
    pytest.param({"spec": {"processing": {"schedule": "0 2 * 13 *"}}},
                 "spec.processing.schedule", "month 1-12 or JAN-DEC", id="cron-month-13"),
    pytest.param({"spec": {"processing": {"settleSeconds": -1}}}, "spec.processing.settleSeconds",
                 "should be greater than or equal to 0", id="settle-negative"),
    pytest.param({"spec": {"processing": {"settleSeconds": 86401}}},
                 "spec.processing.settleSeconds", "should be less than or equal to 86400",
                 id="settle-over-a-day"),
    pytest.param({"spec": {"processing": {"expectEvery": "59m"}}},
                 "spec.processing.expectEvery",
                 'expectEvery "59m" is out of range: give 1h to 744h (31 days)',
                 id="expect-every-under-an-hour"),
    pytest.param({"spec": {"processing": {"expectEvery": "745h"}}},
                 "spec.processing.expectEvery", 'expectEvery "745h" is out of range',
                 id="expect-every-over-31-days"),
    pytest.param({"spec": {"processing": {"expectEvery": "2d"}}},
                 "spec.processing.expectEvery", "should match", id="expect-every-in-days"),
    pytest.param({"spec": {"processing": {"expectEvery": "26"}}},
                 "spec.processing.expectEvery", "should match", id="expect-every-without-unit"),
    pytest.param({"spec": {"processing": {"expectEvery": "9" * 24}}},
                 "spec.processing.expectEvery", "should match",
                 id="expect-every-huge-number"),
    pytest.param({"spec": {"retention": {"processedDays": 0}}}, "spec.retention.processedDays",
                 "should be greater than or equal to 1", id="retention-zero-days"),
    pytest.param({"spec": {"retention": {"processedDays": 3651}}},
                 "spec.retention.processedDays", "should be less than or equal to 3650",
                 id="retention-over-ten-years"),
    pytest.param({"spec": {"backups": {"keep": 0}}}, "spec.backups.keep",
                 "should be greater than or equal to 1", id="keep-no-backups"),
    pytest.param({"spec": {"backups": {"keep": 366}}}, "spec.backups.keep",
                 "should be less than or equal to 365", id="keep-too-many"),
    pytest.param({"spec": {"service": {"port": 0}}}, "spec.service.port",
                 "should be greater than or equal to 1", id="port-zero"),
    pytest.param({"spec": {"service": {"port": 65536}}}, "spec.service.port",
                 "should be less than or equal to 65535", id="port-too-high"),
    pytest.param({"spec": {"service": {"type": "ExternalName"}}}, "spec.service.type",
                 'Unsupported value: "ExternalName": supported values: "ClusterIP", "NodePort", '
                 '"LoadBalancer"', id="service-type-unknown"),
    pytest.param({"spec": {"deletionPolicy": "Destroy"}}, "spec.deletionPolicy",
                 'Unsupported value: "Destroy": supported values: "Retain", "Delete"',
                 id="deletion-policy-unknown"),
    pytest.param({"spec": {"storage": {"accessMode": "ReadOnlyMany"}}},
                 "spec.storage.accessMode", 'Unsupported value: "ReadOnlyMany"',
                 id="access-mode-read-only"),
    pytest.param({"spec": {"processing": {"formats": ["csv"]}}},
                 "spec.processing.formats[0]", 'Unsupported value: "csv": supported values: '
                 '"oneroster", "generic-csv", "prior-system-pdfs"', id="format-unknown"),
    pytest.param({"spec": {"processing": {"formats": ["oneroster", "oneroster"]}}},
                 "spec.processing.formats[1]", 'Duplicate value: "oneroster"',
                 id="format-twice"),
    pytest.param({"spec": {"storage": {"size": "lots"}}}, "spec.storage.size",
                 'storage.size "lots" is not a quantity: write a number with a unit',
                 id="size-not-a-quantity"),
    pytest.param({"spec": {"storage": {"size": 10}}}, "spec.storage.size",
                 "spec.storage.size in body must be of type string", id="size-without-unit"),
    pytest.param({"spec": {"storage": {"size": "0"}}}, "spec.storage.size",
                 "storage.size must be larger than zero", id="size-zero"),
    pytest.param({"spec": {"suspend": "no"}}, "spec.suspend",
                 'Invalid value: "string": spec.suspend in body must be of type boolean',
                 id="suspend-not-boolean"),
    pytest.param({"spec": {"hostKeys": {"overlap": "30 days"}}}, "spec.hostKeys.overlap",
                 'hostKeys.overlap "30 days" is not a duration', id="overlap-not-a-duration"),
    pytest.param({"spec": {"hostKeys": {"overlap": "0s"}}}, "spec.hostKeys.overlap",
                 'hostKeys.overlap "0s" must be between 1s and 365d', id="overlap-zero"),
    pytest.param({"spec": {"hostKeys": {"overlap": "366d"}}}, "spec.hostKeys.overlap",
                 'hostKeys.overlap "366d" must be between 1s and 365d', id="overlap-too-long"),
    pytest.param({"spec": {"hostKeys": {"rotate": -1}}}, "spec.hostKeys.rotate",
                 "should be greater than or equal to 0", id="rotate-negative"),
    pytest.param({"spec": {"colour": "blue"}}, "",
                 'strict decoding error: unknown field "spec.colour"', id="unknown-field"),
    pytest.param({"spec": {"authorisedKeys": [ED25519]}}, "",
                 'unknown field "spec.authorisedKeys"', id="misspelt-field"),
    pytest.param({"spec": {"storage": {"size": "20Gi", "sizeLimit": "30Gi"}}}, "",
                 'unknown field "spec.storage.sizeLimit"', id="unknown-nested-field"),
]


def lines_naming(field: str, stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not field or f"{field}: " in line]


@pytest.mark.parametrize(("patch", "field", "message"), INVALID)
def test_an_invalid_district_is_refused_with_a_clear_message(
        api: Any, request: pytest.FixtureRequest, patch: dict[str, Any], field: str,
        message: str) -> None:
    obj = district(object_name("bad", request), patch)
    result = create(api, obj)
    assert result.returncode != 0, f"the API server accepted {obj}"
    assert any(message in line for line in lines_naming(field, result.stderr)), result.stderr


# Each case: a valid District (as a merge patch on the one above), a change to it the API server
# must refuse, the field it names, and the message.
INVALID_CHANGES = [
    pytest.param({"spec": {"storage": {"size": "20Gi"}}}, {"spec": {"storage": {"size": "19Gi"}}},
                 "spec.storage.size",
                 "storage.size cannot shrink from 20Gi to 19Gi: a volume can grow but never shrink",
                 id="shrink-storage"),
    pytest.param({"spec": {"storage": {"size": "1Ti"}}}, {"spec": {"storage": {"size": None}}},
                 "spec.storage.size", "cannot shrink from 1Ti to 10Gi",
                 id="shrink-storage-by-removing-size"),
    pytest.param({}, {"spec": {"storage": {"accessMode": "ReadWriteMany"}}},
                 "spec.storage.accessMode",
                 "storage.accessMode cannot change once the volume exists",
                 id="change-access-mode"),
    pytest.param({"spec": {"storage": {"storageClassName": "fast"}}},
                 {"spec": {"storage": {"storageClassName": "slow"}}}, "spec.storage",
                 "storage.storageClassName cannot change once the volume exists",
                 id="change-storage-class"),
    pytest.param({}, {"spec": {"storage": {"storageClassName": "fast"}}}, "spec.storage",
                 "storage.storageClassName cannot change", id="add-storage-class"),
    pytest.param({"spec": {"authorizedKeys": [ED25519]}},
                 {"spec": {"authorizedKeys": None}}, "spec.authorizedKeys",
                 "no one could log in", id="remove-last-key"),
    pytest.param({"spec": {"hostKeys": {"rotate": 2}}}, {"spec": {"hostKeys": {"rotate": 1}}},
                 "spec.hostKeys.rotate", "hostKeys.rotate can only go up", id="rotate-down"),
]


@pytest.mark.parametrize(("before", "change", "field", "message"), INVALID_CHANGES)
def test_an_invalid_change_is_refused_and_the_district_kept(
        api: Any, request: pytest.FixtureRequest, before: dict[str, Any], change: dict[str, Any],
        field: str, message: str) -> None:
    name = object_name("change", request)
    ok(api, "create", "--validate=strict", "-f", "-", input=json.dumps(district(name, before)))
    stored = get(api, name)
    result = api.kubectl("patch", "district", name, "-n", NAMESPACE, "--type=merge",
                         "-p", json.dumps(change), check=False)
    assert result.returncode != 0, f"the API server accepted {change}"
    assert any(message in line for line in lines_naming(field, result.stderr)), result.stderr
    assert get(api, name)["spec"] == stored["spec"]


VALID = [
    pytest.param({"spec": {"login": "lincoln_sis-2"}}, id="login-with-underscore-and-digit"),
    pytest.param({"spec": {"login": "applegrove.org"}}, id="login-domain"),
    pytest.param({"spec": {"login": "4cd.k12.ca.us"}}, id="login-domain-starting-with-digit"),
    pytest.param({"spec": {"login": "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61}},
                 id="login-of-253"),
    pytest.param({"metadata": {"name": "lincoln-county-unified-school-district-001"},
                  "spec": {"login": None}}, id="name-of-42-without-login"),
    pytest.param({"spec": {"processing": {"formats": ["generic-csv"]}}}, id="format-generic-csv"),
    pytest.param({"spec": {"processing": {"formats": ["oneroster", "generic-csv"]}}},
                 id="formats-both"),
    pytest.param({"metadata": {"name": "lincoln-county-unified-school-district-001"},
                  "spec": {"login": "lincoln"}}, id="name-of-42-with-login"),
    pytest.param({"spec": {"authorizedKeys": [ECDSA, ED25519 + "\n", ED25519.rsplit(" ", 1)[0],
                                              ED25519.replace(" ", "\t", 1)]}},
                 id="keys-ecdsa-trailing-newline-no-comment-tab"),
    pytest.param({"spec": {"authorizedKeys": [
        "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIA== yubikey",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 rsa@lincoln"]}}, id="keys-security-key-and-rsa"),
    pytest.param({"spec": {"authorizedKeys": None, "authorizedKeysSecretRef": {"name": "keys.v2"}}},
                 id="keys-only-from-secret"),
    pytest.param({"spec": {"authorizedKeys": None, "suspend": True}}, id="suspended-without-keys"),
    pytest.param({"spec": {"allowedSourceRanges": ["203.0.113.7/32", "0.0.0.0/0",
                                                   "2001:db8:42::/48", "::1/128"]}},
                 id="cidrs-v4-and-v6"),
    pytest.param({"spec": {"processing": {"schedule": "*/15 6-18 * * MON-FRI"},
                           "retention": {"schedule": "@daily"},
                           "backups": {"schedule": "30 1,13 1-7/2 jan,Jul 0"}}},
                 id="cron-ranges-names-lists-steps-macros"),
    pytest.param({"spec": {"processing": {"schedule": "  0  2 * * 7 ", "settleSeconds": 0,
                                          "formats": []}}}, id="cron-extra-spaces-settle-zero"),
    pytest.param({"spec": {"processing": {"formats": ["generic-csv", "oneroster"]}}},
                 id="formats-generic-csv-and-oneroster"),
    pytest.param({"spec": {"processing": {"expectEvery": "26h"}}}, id="expect-every-26h"),
    pytest.param({"spec": {"processing": {"expectEvery": "1h"}}}, id="expect-every-lower-bound"),
    pytest.param({"spec": {"processing": {"expectEvery": "743h59m60s"}}},
                 id="expect-every-upper-bound-mixed-units"),
    pytest.param({"spec": {"storage": {"size": "512Mi", "accessMode": "ReadWriteOncePod"},
                           "service": {"type": "ClusterIP", "port": 2022},
                           "retention": {"processedDays": 3650}, "backups": {"keep": 365}}},
                 id="bounds-and-small-volume"),
    pytest.param({"spec": {"hostKeys": {"rotate": 3, "overlap": "365d"}}},
                 id="rotate-longest-overlap"),
    pytest.param({"spec": {"hostKeys": {"overlap": "90s"}}}, id="overlap-seconds"),
]


@pytest.mark.parametrize("patch", VALID)
def test_a_valid_district_is_accepted(api: Any, request: pytest.FixtureRequest,
                                      patch: dict[str, Any]) -> None:
    result = create(api, district(object_name("ok", request), patch),
                    "--dry-run=server")
    assert result.returncode == 0, result.stderr


def test_storage_may_grow(api: Any) -> None:
    ok(api, "create", "-f", "-", input=json.dumps(district("grows")))
    ok(api, "patch", "district", "grows", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"storage": {"size": "10.5Gi"}}}))
    assert get(api, "grows")["spec"]["storage"]["size"] == "10.5Gi"


def test_kubectl_refuses_unknown_fields_by_default_and_warn_drops_them(api: Any) -> None:
    typo = json.dumps(district("lenient", {"spec": {"colour": "blue"}}))
    refused = api.kubectl("create", "-f", "-", input=typo, check=False)
    assert refused.returncode != 0
    assert 'unknown field "spec.colour"' in refused.stderr

    dropped = ok(api, "create", "--validate=warn", "-f", "-", input=typo)
    assert 'unknown field "spec.colour"' in dropped.stderr
    assert "colour" not in get(api, "lenient")["spec"]
