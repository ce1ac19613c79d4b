"""Host key rotation end to end, and a deleted host-key Secret, against the real control plane.

Real: the control plane, `district-operator run` (a process), `kubectl district hostkeys
rotate`, `sftpd serve`, OpenSSH's sftp. Stood in for: the kubelet, which the test plays by
writing the host-key Secret's content into a directory with a Secret volume's layout
(`..data` swapped atomically) after each step, mapped from the paths of the operator's
Deployment environment; and the cloud load balancer (the Service's status gets 127.0.0.1).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from district_devtools.ports import free_port
from district_operator import api, names

from tests.conftest import require_binary
from tests.district_operator.conftest import OperatorProcess, wait_for
from tests.district_operator.test_notifications import Hook
from tests.kubectl_district.conftest import (
    create_district,
    district_status,
    patch_status,
    plugin,
    public_line,
    secret_files,
    wait_published,
)
from tests.sftpd.server.conftest import Keys, SecretVolume, ServerProcess, start_server

pytestmark = pytest.mark.cluster
DISTRICT = "roosevelt"
LOGIN = "roosevelt.k12.example.org"


@dataclass
class Rotating:
    """The District's server, fed from its host-key Secret, and what the test needs of it."""

    server: ServerProcess
    volume: SecretVolume
    namespace: str
    hook: Hook
    client: Path
    directory: Path

    def deliver_host_keys(self, kube: api.Kube) -> None:
        """The kubelet's part: the Secret's current content into the mounted volume."""
        self.volume.publish(secret_files(kube, self.namespace,
                                         names.host_keys_secret(DISTRICT)))


def server_paths(kube: api.Kube, namespace: str, volume: Path) -> tuple[list[str], list[str]]:
    """The host key paths of the operator's Deployment, mapped into the test's volume."""
    deployment = wait_for(lambda: kube.get("Deployment", namespace, names.deployment(DISTRICT)),
                          what="the server's Deployment")
    env = {e["name"]: e.get("value") or ""
           for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    def mapped(variable: str) -> list[str]:
        return [str(volume / Path(p).relative_to(names.HOST_KEYS_DIR))
                for p in env[variable].split(",") if p]
    return mapped("SFTPD_HOST_KEY"), mapped("SFTPD_NEXT_HOST_KEY")


@pytest.fixture(scope="module")
def rotating(crd: Any, kube: api.Kube, namespace: str, operator: OperatorProcess,
             client_keys: list[Path], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Rotating]:
    hook = Hook()
    crd.kubectl("-n", namespace, "create", "secret", "generic", "roosevelt-hook",
                f"--from-literal=url={hook.url}")
    port = free_port()
    create_district(crd, namespace, DISTRICT, login=LOGIN,
                    authorizedKeys=[public_line(client_keys[0])],
                    service={"type": "LoadBalancer", "port": port},
                    notifications={"webhookSecretRef": {"name": "roosevelt-hook"}})
    wait_for(lambda: kube.get("Service", namespace, names.service(DISTRICT)),
             what="the District's Service")
    patch_status(crd, "service", namespace, names.service(DISTRICT),
                 {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}})
    wait_published(kube, namespace, DISTRICT, contains=f"[127.0.0.1]:{port}")
    directory = tmp_path_factory.mktemp("roosevelt")
    volume = SecretVolume(directory / "host-keys")
    volume.publish(secret_files(kube, namespace, names.host_keys_secret(DISTRICT)))
    current, upcoming = server_paths(kube, namespace, volume.directory)
    assert len(current) == 2 and len(upcoming) == 2
    authorized = SecretVolume(directory / "authorized-keys")
    authorized.publish(secret_files(kube, namespace, names.authorized_keys_secret(DISTRICT)))
    keys = Keys(volume.directory, Path(current[0]), Path(current[1]), client_keys[0],
                Path("/nonexistent"), authorized)
    extra = [arg for path in upcoming for arg in ("--next-host-key", path)]
    server = start_server(directory / "data", keys, directory / "audit.jsonl", *extra,
                          "--login", LOGIN, "--port", str(port))
    server.port = port
    yield Rotating(server, volume, namespace, hook, client_keys[0], directory)
    assert server.stop() == 0
    hook.server.shutdown()


def sftp(rotating: Rotating, known_hosts: Path, *options: str
         ) -> subprocess.CompletedProcess[str]:
    """OpenSSH sftp with strict host key checking against `known_hosts`."""
    require_binary("sftp")
    return subprocess.run(
        ["sftp", "-i", str(rotating.client), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         *options, "-P", str(rotating.server.port), "-b", "-", f"{LOGIN}@127.0.0.1"],
        input="ls /\n", capture_output=True, text=True, timeout=60)


def sftp_learning(rotating: Rotating, known_hosts: Path, wanted: set[str], *options: str
                  ) -> subprocess.CompletedProcess[str]:
    """sftp with UpdateHostKeys, its session held open until `known_hosts` holds `wanted`.

    ssh learns announced keys only once the server has proved them (hostkeys-prove-00), a
    round trip after login: a batch that ends first may leave before that, so the session
    stays open until the keys are written (or a timeout says they never were).
    """
    require_binary("sftp")
    process = subprocess.Popen(
        ["sftp", "-i", str(rotating.client), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "UpdateHostKeys=yes", *options, "-P", str(rotating.server.port), "-b", "-",
         f"{LOGIN}@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdin is not None
    process.stdin.write("ls /\n")
    process.stdin.flush()
    try:
        wait_for(lambda: process.poll() is not None or wanted <= blobs(known_hosts.read_text()),
                 timeout=60, what="the client to learn the announced keys")
    finally:
        stdout, stderr = process.communicate("bye\n", timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def blobs(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if len(line.split()) >= 3}


def secret_blobs(kube: api.Kube, namespace: str, prefix: str = "") -> set[str]:
    files = secret_files(kube, namespace, names.host_keys_secret(DISTRICT))
    return {files[f"{prefix}{name}.pub"].split()[1] for name in names.HOST_KEY_FILES.values()
            if f"{prefix}{name}.pub" in files}


def condition(kube: api.Kube, namespace: str, kind: str) -> dict[str, Any]:
    return next((c for c in district_status(kube, namespace, DISTRICT).get("conditions") or []
                 if c["type"] == kind), {})


def wait_condition(kube: api.Kube, namespace: str, kind: str, status: str, reason: str,
                   timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (lambda c: c if (c.get("status"), c.get("reason")) ==
                             (status, reason) else None)(condition(kube, namespace, kind)),
                    timeout=timeout, what=f"{kind}={status} ({reason})")  # type: ignore[no-any-return]


def event_reasons(kube: api.Kube, namespace: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in kube.list("Event", namespace)
            if e["involvedObject"].get("name") == DISTRICT
            and e["involvedObject"].get("kind") == names.KIND]


def posted(hook: Hook, event: str, timeout: float = 30) -> list[dict[str, Any]]:
    wait_for(lambda: any(p["event"] == event for p in hook.received), timeout=timeout,
             what=f"a webhook post of {event}")
    return [p for p in hook.received if p["event"] == event]


def test_rotation_end_to_end(rotating: Rotating, kube: api.Kube, tmp_path: Path) -> None:
    namespace, server = rotating.namespace, rotating.server
    before = district_status(kube, namespace, DISTRICT)
    old = secret_blobs(kube, namespace)
    assert blobs(before["knownHosts"]) == old and len(old) == 2
    assert "nextHostKeys" not in before
    assert condition(kube, namespace, "HostKeysRotating")["reason"] == "NoRotation"
    learner = tmp_path / "learner_known_hosts"  # logs in during the overlap
    learner.write_text(before["knownHosts"])
    stale = tmp_path / "stale_known_hosts"  # never logs in until the old keys are gone
    stale.write_text(before["knownHosts"])
    first = sftp(rotating, learner, "-o", "UpdateHostKeys=yes")
    assert first.returncode == 0, first.stderr

    bad = plugin("hostkeys", "rotate", DISTRICT, "-n", namespace, "--overlap", "30 days")
    assert bad.returncode == 2 and "--overlap" in bad.stderr, bad.stderr

    # Step 1: next keys, announced for the overlap.
    started = plugin("hostkeys", "rotate", DISTRICT, "-n", namespace, "--overlap", "1h")
    assert started.returncode == 0, started.stderr
    assert "rotation 1 requested" in started.stdout
    wait_condition(kube, namespace, "HostKeysRotating", "True", "NextKeysAnnounced")
    upcoming = secret_blobs(kube, namespace, "next_")
    assert len(upcoming) == 2 and not upcoming & old
    overlap = district_status(kube, namespace, DISTRICT)
    assert blobs(overlap["knownHosts"]) == old | upcoming
    assert secret_blobs(kube, namespace) == old  # the current keys are untouched
    message = condition(kube, namespace, "HostKeysRotating")["message"]
    assert len(overlap["nextHostKeys"]) == 2
    assert all(k["fingerprint"] in message for k in overlap["nextHostKeys"]), message
    assert overlap["hostKeyRotation"]["rotation"] == 1
    assert overlap["hostKeyRotation"]["promoteAt"] > overlap["hostKeyRotation"]["startedAt"]
    announced = posted(rotating.hook, "NextKeysAnnounced")
    assert len(announced) == 1
    assert announced[0]["nextHostKeys"] == overlap["nextHostKeys"]
    assert ("Normal", "NextKeysAnnounced") in event_reasons(kube, namespace)
    shown = plugin("status", DISTRICT, "-n", namespace)
    assert "Next keys:" in shown.stdout and "rotation 1" in shown.stdout, shown.stdout
    again = plugin("hostkeys", "rotate", DISTRICT, "-n", namespace)
    assert again.returncode == 2 and "in flight" in again.stderr, again.stderr

    rotating.deliver_host_keys(kube)
    loaded = server.wait_event("host_keys.loaded", timeout=30)[-1]
    assert len(loaded["announced"]) == 2
    # The learner logs in during the overlap; OpenSSH 9.2 names RSA keys ssh-rsa, which its
    # default HostKeyAlgorithms leave out, so without this it would learn the ed25519 key only.
    during = sftp_learning(rotating, learner, upcoming, "-o", "HostKeyAlgorithms=+ssh-rsa")
    assert during.returncode == 0, during.stderr
    assert upcoming <= blobs(learner.read_text())
    # A client set up now from status.knownHosts connects too.
    fresh = tmp_path / "fresh_known_hosts"
    fresh.write_text(overlap["knownHosts"])
    assert sftp(rotating, fresh).returncode == 0

    # Step 2: the overlap ends (shortened, as docs/operations.md describes); the next keys
    # become current and the old ones are dropped.
    second = plugin("hostkeys", "rotate", DISTRICT, "-n", namespace, "--print-patch")
    assert second.returncode == 2  # a patch for a second rotation is refused too
    kube.merge_patch(names.KIND, namespace, DISTRICT, {"spec": {"hostKeys": {"overlap": "1s"}}})
    wait_condition(kube, namespace, "HostKeysRotating", "False", "NextKeysPromoted")
    after = district_status(kube, namespace, DISTRICT)
    assert blobs(after["knownHosts"]) == upcoming
    assert secret_blobs(kube, namespace) == upcoming
    assert secret_blobs(kube, namespace, "next_") == set()
    assert "nextHostKeys" not in after
    assert "completedAt" in after["hostKeyRotation"]
    assert len(posted(rotating.hook, "NextKeysPromoted")) == 1
    assert ("Normal", "NextKeysPromoted") in event_reasons(kube, namespace)

    rotating.deliver_host_keys(kube)
    server.wait_event("host_keys.loaded", count=2, timeout=30)
    # The client that learned the next keys: strict checking, no prompt, no warning.
    promoted = sftp(rotating, learner, "-o", "UpdateHostKeys=yes")
    assert promoted.returncode == 0, promoted.stderr
    assert "WARNING" not in promoted.stderr and "IDENTIFICATION" not in promoted.stderr
    assert "upload-processed" in promoted.stdout
    # The client that knows only the old keys is refused.
    refused = sftp(rotating, stale)
    assert refused.returncode != 0
    assert "Host key verification failed" in refused.stderr, refused.stderr
    # And status.knownHosts is what the server now presents.
    latest = tmp_path / "latest_known_hosts"
    latest.write_text(after["knownHosts"])
    assert sftp(rotating, latest).returncode == 0


def resyncs(operator: OperatorProcess) -> float:
    return sum(v for k, v in operator.metrics().items()
               if k.startswith("district_operator_reconciles_total{") and 'trigger="resync"' in k)


def test_a_deleted_host_key_secret_is_reported_not_regenerated(
        rotating: Rotating, crd: Any, kube: api.Kube, operator: OperatorProcess) -> None:
    namespace = rotating.namespace
    secret_name = names.host_keys_secret(DISTRICT)
    published = district_status(kube, namespace, DISTRICT)
    saved = kube.get("Secret", namespace, secret_name)
    assert saved is not None
    copy = {k: v for k, v in saved.items() if k != "status"}
    copy["metadata"] = {k: v for k, v in saved["metadata"].items()
                        if k in ("name", "namespace", "labels", "annotations",
                                 "ownerReferences")}

    crd.kubectl("-n", namespace, "delete", "secret", secret_name)
    wait_condition(kube, namespace, "HostKeysReady", "False", "HostKeysSecretMissing")
    ready = condition(kube, namespace, "Ready")
    # No volume is bound here, so StorageReady is Ready's first problem; the host keys are
    # among the problems it lists.
    assert ready["status"] == "False" and "HostKeysReady: " in ready["message"], ready
    assert ("Warning", "HostKeysSecretMissing") in event_reasons(kube, namespace)
    assert len(posted(rotating.hook, "HostKeysSecretMissing")) == 1
    # Not regenerated, through two rounds of resync of every District; what the running
    # server holds stays published.
    rounds = resyncs(operator) + 2 * len(kube.list(names.KIND, namespace))
    wait_for(lambda: resyncs(operator) >= rounds, timeout=60, what="two resync rounds")
    assert kube.get("Secret", namespace, secret_name) is None
    missing = district_status(kube, namespace, DISTRICT)
    assert missing["knownHosts"] == published["knownHosts"]
    assert missing["hostKeys"] == published["hostKeys"]

    # A rotation would replace the lost keys: the plugin refuses unless told so.
    refused = plugin("hostkeys", "rotate", DISTRICT, "-n", namespace)
    assert refused.returncode == 2 and "missing" in refused.stderr, refused.stderr

    # Recovery 1: restore the saved copy.
    crd.kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(copy))
    wait_condition(kube, namespace, "HostKeysReady", "True", "HostKeysPresent")
    assert district_status(kube, namespace, DISTRICT)["knownHosts"] == published["knownHosts"]
    assert ("Normal", "HostKeysPresent") in event_reasons(kube, namespace)

    # Recovery 2: no copy; new keys accepted explicitly, even though the lost Secret carried a
    # rotation in flight.
    started = plugin("hostkeys", "rotate", DISTRICT, "-n", namespace, "--overlap", "1h")
    assert started.returncode == 0, started.stderr
    wait_condition(kube, namespace, "HostKeysRotating", "True", "NextKeysAnnounced")
    crd.kubectl("-n", namespace, "delete", "secret", secret_name)
    wait_condition(kube, namespace, "HostKeysReady", "False", "HostKeysSecretMissing")
    accepted = plugin("hostkeys", "rotate", DISTRICT, "-n", namespace, "--accept-new-keys")
    assert accepted.returncode == 0, accepted.stderr
    wait_condition(kube, namespace, "HostKeysReady", "True", "HostKeysPresent")
    replaced = district_status(kube, namespace, DISTRICT)
    assert blobs(replaced["knownHosts"]) == secret_blobs(kube, namespace)
    assert not blobs(replaced["knownHosts"]) & blobs(published["knownHosts"])
    assert ("Warning", "HostKeysReplaced") in event_reasons(kube, namespace)
    assert len(posted(rotating.hook, "HostKeysReplaced")) == 1
    # Fresh keys, no rotation left in flight.
    assert "nextHostKeys" not in replaced
    assert condition(kube, namespace, "HostKeysRotating")["status"] == "False"

